"""Helpers the test modules import (fixtures live in the conftest files; this module holds plain
functions and constants, so no test imports a conftest)."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("dense", "conv", "dropout")
#: The variant whose session export is the README's own `export --variant conv` line (tests/conftest.py).
README_VARIANT = "conv"


def run_cli(*args: str, timeout: int = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `resnet-deploy ARGS` in a subprocess, as a user would: for tests where the process
    boundary is the point (start-up banners, signals, what a fresh interpreter imports)."""
    return subprocess.run([sys.executable, "-m", "export.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def readme_command(pattern: str) -> list[str]:
    """The README's command line matching `pattern`, as argv (comment dropped, CLI by module)."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if re.match(pattern, line):
            argv = shlex.split(line.split("#", 1)[0])
            assert argv[0] == ".venv/bin/resnet-deploy", line
            return [sys.executable, "-m", "export.cli", *argv[1:]]
    raise AssertionError(f"README.md has no line matching {pattern!r}")


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link a file or directory tree: a test's own copy of a session artifact in seconds and no
    disk. Only for readers and for tests that add or replace files (os.replace), never for tests
    that write into a file in place (that would change the shared artifact too)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=os.link)
    else:
        os.link(src, dst)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_main(*args: str) -> CliResult:
    """Run `resnet-deploy ARGS` in this process through `export.cli.app.main(argv)`: the same parser,
    dispatch and one-line error handling, without a Python start-up per call."""
    from export.cli.app import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse usage errors exit from inside parse_args
            code = e.code if isinstance(e.code, int) else 2
    return CliResult(code, out.getvalue(), err.getvalue())


# -- the tiny model: the project's I/O contract at 32 px, seconds to export ------------------

TINY_SIZE = 32
TINY_CLASSES = 10


def tiny_model(logit_scale: float = 1.0, bias: np.ndarray | None = None, seed: int = 0):
    """A small Keras model with the project's I/O contract (`image` -> `logits`, `probabilities`)."""
    import keras
    keras.utils.set_random_seed(seed)
    image = keras.Input((TINY_SIZE, TINY_SIZE, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(TINY_CLASSES, name="logits")(x)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    model = keras.Model(image, {"logits": logits, "probabilities": probabilities})
    layer = model.get_layer("logits")
    kernel, b = layer.get_weights()
    layer.set_weights([kernel * logit_scale, b if bias is None else bias.astype(np.float32)])
    return model


def tiny_runner(tiny, kind: str):
    """A (not loaded) runner of the tiny model for `kind`: keras, savedmodel, tflite, tflite_int8, onnx,
    openvino (at the f32 precision hint)."""
    from export.runtimes import runner_for
    from export.runtimes.keras import KerasRunner
    if kind == "keras":
        return KerasRunner(tiny["model"])
    return runner_for(tiny[kind], device="CPU")


#: The class names of `tiny_built` (written into its TFLite metadata).
TINY_TFLITE_LABELS = [f"kind_{i}" for i in range(TINY_CLASSES)]


def tiny_built(resnet_preprocess: bool = False, name: str = "tiny"):
    """A BuiltModel around a tiny model: with ResNet50's in-graph preprocessing (export.model.build's frozen
    1x1 conv: RGB -> BGR minus the means) when asked, as the full-integer TFLite input sees it."""
    import keras

    from export.model.build import BuiltModel, preprocess_layer, preprocess_weights
    from export.model.variants import VariantSpec
    if resnet_preprocess:
        keras.utils.set_random_seed(0)
        image = keras.Input((TINY_SIZE, TINY_SIZE, 3), dtype="float32", name="image")
        pre = preprocess_layer()
        x = pre(image)
        pre.set_weights(preprocess_weights())
        x = keras.layers.Conv2D(8, 3, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        logits = keras.layers.Dense(TINY_CLASSES, name="logits")(x)
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        model = keras.Model(image, {"logits": logits, "probabilities": probabilities})
    else:
        model = tiny_model()
    spec = VariantSpec(name=name, head=(), num_classes=TINY_CLASSES, input_size=TINY_SIZE,
                       description="A tiny test classifier")
    return BuiltModel(model, spec, TINY_CLASSES, TINY_SIZE, {"source": "random:0"}, list(TINY_TFLITE_LABELS))


def has_bf16() -> bool:
    """Whether this CPU has bf16 units (AMX-BF16 or AVX512-BF16) for OpenVINO's bf16 hint."""
    from export.core.cpu_features import bf16_unit, cpu_flags
    return bf16_unit(cpu_flags()) is not None


def demo_bundle(root: Path) -> Path:
    """`root` (e.g. dist/demo-1) as a small bundle: a .tflite, a models.config and their manifest
    (no variants, no artifacts listed): for the tests of what reads, checks or signs a bundle."""
    from export.bundle.layout import write_manifest
    from export.bundle.manifest import Manifest, ParitySummary
    (root / "tflite" / "demo").mkdir(parents=True)
    (root / "tflite" / "demo" / "model_fp32.tflite").write_bytes(bytes(range(256)) * 16)
    (root / "models.config").write_text("model_config_list {}\n")
    write_manifest(root, Manifest(name="demo", version=1, created_at="2026-01-01T00:00:00+00:00", tool_versions={},
                                  config="test", variants={}, artifacts=[], parity=ParitySummary(passed=True)))
    return root
