"""Session fixtures: expensive things (built models, exported artifacts) are made once per session
and shared. Plain helpers are in tests/helpers.py.

The ResNet50 artifacts, one export per variant for the whole session (use these; do not export
a ResNet50 again in a test unless the export itself is what the test checks):
- `built_model(variant, weights="random:0")`: the BuiltModel, built once.
- `exported(variant)`: (BuiltModel, out_dir, {key: Artifact}) with every format and precision of the
  variant (9 artifacts, artifact paths absolute, golden files in out_dir for "conv"). "conv" is made
  by the README's own `resnet-deploy export --variant conv` line (`readme_sequence`), dense and
  dropout in this process. Treat out_dir as read-only: copy or `tests.helpers.link_tree` what a
  test changes.
- `readme_sequence`: the README's export-then-parity commands for conv, run verbatim in a fresh
  directory (their CompletedProcess results and the directory).
- `variant_parity(variant)` (tests/export/conftest.py): the parity report of `exported(variant)`.
- `bundle` (tests/serving/conftest.py): a served bundle hard-linked from `exported("dense")`.
- `published` (tests/export/conftest.py): one real `resnet-deploy bundle` run (trained dense head,
  signed), for the bundle, manifest, verify, training-provenance and accuracy-gate tests.
Tiny models (`tiny`, `tiny_tflite`, tests.helpers.tiny_model) cover the logic in seconds.

Every test carries exactly one tier marker (unit, integration or e2e; see pyproject.toml): a test
without one fails collection, and a run of unit tests alone fails if anything imported TensorFlow.
`make test` and `make test-fast` run on 2 pytest-xdist workers (`--dist loadgroup`). The e2e tests
form two xdist groups that share no session artifact (`e2e_group`: the published bundle and
training runs; the shared exports and everything served from them), so each artifact is built
once, on one worker, while the other worker runs the other group and the short tests. A unit or
integration test that uses a module-scoped fixture is grouped with its module's other users of one
(`module_fixture_group`), so that the fixture too is built on one worker only.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.helpers import README_VARIANT, ROOT, TINY_SIZE, readme_command, tiny_built, tiny_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

TIERS = ("unit", "integration", "e2e")
#: `--cpu-durations=N` (tests/cpu_durations.py).
pytest_plugins = ["tests.cpu_durations"]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads xdist_group to group the tests
def pytest_collection_modifyitems(config, items):
    untiered = [item.nodeid for item in items
                if sum(1 for tier in TIERS if item.get_closest_marker(tier)) != 1]
    if untiered:
        raise pytest.UsageError("tests need exactly one tier marker (unit, integration or e2e): "
                                + ", ".join(untiered[:10]))
    config._only_unit = bool(items) and all(item.get_closest_marker("unit") for item in items)
    grouping = bool(getattr(config.option, "loadgroup", False))  # a pytest-xdist worker under --dist loadgroup
    for item in items:  # each session artifact, and each module fixture, is built on one worker only
        group = e2e_group(item) if item.get_closest_marker("e2e") else module_fixture_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
            if grouping:
                _write_group_into_node_id(item, group)


def _write_group_into_node_id(item, group: str) -> None:
    """What pytest-xdist 3.8's loadgroup does to a grouped test's node id (`<id>@<group>`, which its
    scheduler reads), written where pytest 9.2 reads node ids: xdist writes `item._nodeid`, which
    pytest 9.2 no longer reads, so every group was silently split across the workers (pytest-xdist
    issue 1386, fix proposed in PR 1388) and each worker built its own copy of every session artifact."""
    from _pytest.nodeid import NodeId
    if not item.nodeid.endswith(f"@{group}") and hasattr(item, "_id"):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")


#: e2e modules that never touch the shared exports (`exported`, `readme_sequence`, the served
#: `bundle`): the published bundle, training runs, in-process builds. They form one xdist group and
#: every other e2e test the other, so that the two workers of `make test` build disjoint artifacts.
BUNDLE_GROUP_MODULES = frozenset({"test_bundle.py", "test_train.py", "test_train_runs.py", "test_cli.py",
                                  "test_weights.py", "test_build.py"})


def e2e_group(item) -> str:
    module = Path(str(item.fspath)).name
    return "e2e-bundle" if module in BUNDLE_GROUP_MODULES and "export" in Path(str(item.fspath)).parts else "e2e-exports"


def module_fixture_group(item) -> str | None:
    """`module:<path>` for a unit or integration test that uses a module-scoped fixture (a tiny bundle's
    server, an export of a tiny model), so that every test of that module using one runs on the worker
    that built it; None for the others, which xdist hands out one at a time. Before this, the tests of
    a module were split across both workers and each built the module's fixtures: 40 s of the
    2 workers' time in `make test-fast` (`--durations=0`: test_server_seams' server started twice,
    9-10 s each; test_file_parity's bundles, test_openvino_backend's, test_accuracy_gate_int8's)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    if not any(d.scope == "module" for defs in info.name2fixturedefs.values() for d in defs):
        return None
    path = Path(str(item.fspath))
    return f"module:{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}"


def pytest_sessionfinish(session, exitstatus):
    if getattr(session.config, "_only_unit", False) and "tensorflow" in sys.modules and exitstatus == 0:
        print("\nerror: a `unit` test imported TensorFlow; mark it integration or e2e", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def built_model():
    """Call with (variant, weights="random:0"): a BuiltModel, built once per session."""
    cache: dict = {}

    def get(variant: str, weights: str = "random:0"):
        if (variant, weights) not in cache:
            from export.model.build import build
            from export.model.variants import get_variant
            cache[variant, weights] = build(get_variant(variant), weights=weights)
        return cache[variant, weights]
    return get


@pytest.fixture(scope="session")
def photos():
    from export.model import samples
    return samples.photos()


@dataclass
class ReadmeSequence:
    cwd: Path
    export: subprocess.CompletedProcess
    parity: subprocess.CompletedProcess | None  # None when the export failed

    @property
    def out(self) -> Path:
        return self.cwd / "artifacts"


@pytest.fixture(scope="session")
def readme_sequence(tmp_path_factory) -> ReadmeSequence:
    """The README's export-then-parity sequence (`resnet-deploy export --variant conv --format all
    --out artifacts/`, then `parity --artifacts artifacts/ ...`), run verbatim in a fresh directory
    as a new user would. Its artifacts are the session's conv export and its parity.json the conv
    parity report, so the README is proven and conv is exported once."""
    cwd = tmp_path_factory.mktemp("readme")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(pattern: str) -> subprocess.CompletedProcess:
        return subprocess.run(readme_command(pattern), cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    export = run(rf"\.venv/bin/resnet-deploy export --variant {README_VARIANT} ")
    parity_line = rf"\.venv/bin/resnet-deploy parity --artifacts artifacts/ --variant {README_VARIANT} "
    parity = run(parity_line) if export.returncode == 0 else None
    return ReadmeSequence(cwd, export, parity)


@pytest.fixture(scope="session")
def exported(request, tmp_path_factory, built_model):
    """Call with a variant name: (BuiltModel, out_dir, {key: Artifact}) with every format and
    precision of that variant, exported once per session (conv by the README's command)."""
    root = tmp_path_factory.mktemp("artifacts")
    cache: dict = {}

    def get(variant: str):
        if variant not in cache:
            from export.formats import read_index
            from export.pipeline.single import export_artifacts, resolve_targets
            built = built_model(variant)
            if variant == README_VARIANT:
                seq = request.getfixturevalue("readme_sequence")
                assert seq.export.returncode == 0, seq.export.stderr[-3000:]
                out = seq.out
                arts = [replace(a, path=str(out / a.path)) for a in read_index(out)]
            else:
                out = root / f"exported-{variant}"
                arts = export_artifacts(built, out, resolve_targets("all"))
            cache[variant] = (built, out, {a.key: a for a in arts})
        return cache[variant]
    return get


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny model and its SavedModel, .tflite (fp32 and full-int8 uint8 I/O), .onnx files and an
    OpenVINO IR (converted from the .onnx with fp32 weights, independently of export/formats)."""
    import tensorflow as tf
    import tf2onnx

    from export.model import samples
    root = tmp_path_factory.mktemp("tiny")
    model = tiny_model()
    model.export(str(root / "savedmodel"), format="tf_saved_model", verbose=False)
    model.export(str(root / "model.tflite"), format="litert", verbose=False)
    conv = tf.lite.TFLiteConverter.from_saved_model(str(root / "savedmodel"))
    photos = samples.photos(TINY_SIZE)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([photos[i:i + 1]] for i in range(len(photos)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    (root / "model_int8.tflite").write_bytes(conv.convert())
    spec = (tf.TensorSpec((None, TINY_SIZE, TINY_SIZE, 3), tf.float32, name="image"),)
    fn = tf.function(lambda image: model(image, training=False), input_signature=spec)
    tf2onnx.convert.from_function(fn, input_signature=spec, output_path=str(root / "model.onnx"), opset=17)
    import openvino as ov
    ov.save_model(ov.convert_model(str(root / "model.onnx")), str(root / "ir" / "model.xml"), compress_to_fp16=False)
    return {"model": model, "root": root, "savedmodel": root / "savedmodel", "tflite": root / "model.tflite",
            "tflite_int8": root / "model_int8.tflite", "onnx": root / "model.onnx",
            "openvino": root / "ir" / "model.xml"}


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory):
    """The four TFLite precisions of a tiny model with ResNet50's preprocessing, exported with
    metadata by the real exporter (from the Keras model, calibrated on the sample photos)."""
    from export.formats import tflite
    out = tmp_path_factory.mktemp("tiny-tflite")
    built = tiny_built(resnet_preprocess=True)
    card = {"name": "tiny-test", "version": 7, "author": "The Tests", "license": "Apache-2.0"}
    arts = {p: tflite.export(built, out, p, card=card) for p in ("fp32", "fp16", "dynamic", "int8")}
    return built, out, arts
