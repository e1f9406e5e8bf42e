"""resnet-deploy, the model side: build extended ResNet50 variants and export them.

Nothing under `export/` imports `serving/` except `export.cli.app`, the console entry point
(tests/export/test_layering.py checks it). Files a deployment reads (TF Serving configs,
warmup records) are written here, in `export.deploy`.
"""
from __future__ import annotations

import os

# TensorFlow's C++ logging drowns the CLI's output; users can still raise it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up banner (absl INFO lines that ignore
    TF_CPP_MIN_LOG_LEVEL) kept off stderr, so CLI errors stay one line. If the import
    fails, what it printed is replayed."""
    import sys
    import tempfile
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()  # the CUDA probe logs here, once
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf
