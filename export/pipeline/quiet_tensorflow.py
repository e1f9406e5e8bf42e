"""Imported by the export pool's fork server (export.pipeline.forkserver FORK_PRELOAD): TensorFlow,
imported quietly. A plain `import tensorflow` there printed TensorFlow's start-up banner (absl INFO
lines on oneDNN and CUDA, which ignore TF_CPP_MIN_LOG_LEVEL) twice at the top of every `make export`,
where a new user reads it as a problem; the tasks forked from the server have it already."""
from __future__ import annotations

from export import import_tensorflow_quietly

import_tensorflow_quietly()
