"""The per-variant work of `make export`, as functions that export.pipeline.workers runs in worker processes.

Before a variant's, its `train_task` trains it (or reuses its cached run) when it has `data`.
Then three or four tasks per variant, so two cores stay busy and no process holds more than one converter:
- `keras_task`: build the model, write the SavedModel (TF Serving's layout, with warmup), compute
  and save the golden outputs, check the SavedModel against them;
- `convert_task(fmt="tflite")`: every TFLite precision from that SavedModel, each checked;
- `convert_task(fmt="onnx")`: ONNX fp32 from the same SavedModel, int8 quantized from it, checked;
- `convert_task(fmt="openvino")`: the fp16 IR and the int8 IR (NNCF PTQ; one that fails the accuracy gate is
  quantized again with NNCF's accuracy control), checked.
Each returns plain data (artifacts relative to the staging root, parity results, stage seconds)
that the parent merges into one ParityReport and one manifest.

A variant whose Keras reference fails its check (saturated, one class, not finite) stops there:
its Keras task says `stop`, and its converter tasks return at once without converting anything
(the bundle is not published either way; the report says why). The accuracy gate runs on the
runners the parity check loaded (export.pipeline.gate_stage.Measured).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
#: Where a SavedModel that the bundle does not ship (precisions without fp32) is written for the
#: converters, inside the staging directory; removed before the bundle is laid out.
WORK_DIR = ".work"
#: Appended to a failed reference check's failures: why the variant has no other parity rows.
NOT_CONVERTED = ("nothing converted: the reference failed its check, so no artifact of this variant was converted or "
                 "checked; fix the model or its weights, then export again")


class _Clock:
    """Stage timings of one task: [{"variant", "stage", "seconds"}], summed per stage name."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def timings(self) -> list[dict[str, Any]]:
        return [{"variant": self.variant, "stage": s, "seconds": round(v, 2)} for s, v in self.seconds.items()]


def _setup_threads(threads: int) -> None:
    """TensorFlow's process-wide pools, before its first op (the pool gives each task `threads`)."""
    from export.runtimes.tensorflow import TensorFlowRunner
    TensorFlowRunner.preload(threads)


def saved_model_dir(staging: str | Path, variant: str, version: int, ships_savedmodel: bool) -> Path:
    """The SavedModel the converters read: the bundle's own, or a scratch one under WORK_DIR."""
    from export.core.registry import FORMATS
    if ships_savedmodel:
        return FORMATS["savedmodel"].target_path(staging, variant, "fp32", version)
    return Path(staging) / WORK_DIR / variant / "savedmodel"


def train_task(*, variant: dict[str, Any], runs: str, threads: int, alone: bool = False,
               share_maps: bool = False) -> dict[str, Any]:
    """Train a configured variant that has `data`, or reuse its cached run in `runs`
    (export.training.runs; `share_maps`: see maps_sharers there). Returns what its Keras task builds
    from and what the manifest records. `alone`: nothing else runs beside this task, so it takes every core."""
    import os
    _setup_threads(max(threads, os.cpu_count() or 1) if alone else threads)
    from export.training.runs import ensure_run
    clock = _Clock(variant["name"])
    run = clock.run("train", ensure_run, variant, runs, wait=True, share_maps=share_maps)
    return {"task": "train", "timings": clock.timings(),
            "runs": {variant["name"]: {"model_path": str(run.model_path), "labels": run.class_names,
                                       "input_size": run.config["input_size"], "provenance": run.provenance(),
                                       "summary": run.summary()}}}


def keras_task(*, variant: str, build_args: dict[str, Any], staging: str, version: int,
               ships_savedmodel: bool, threads: int, batch_sizes: tuple[int, ...],
               train: dict[str, Any] | None = None, gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build, SavedModel, golden, SavedModel parity; returns what the manifest says of the variant.
    With `train` (train_task's result) the variant's trained model is what is built; with `gate`
    (the accuracy gate's settings) its eval and calibration sets are prepared (export.pipeline.gate_stage)."""
    _setup_threads(threads)
    run = train["runs"][variant] if train else None
    if run is not None:
        build_args = {**build_args, "weights": run["model_path"], "num_classes": len(run["labels"]),
                      "labels": run["labels"], "input_size": run["input_size"]}
    from export.deploy.warmup import write_warmup_requests
    from export.formats import savedmodel
    from export.model.build import build, io_spec, param_counts
    from export.model.variants import get_variant
    from export.quality import golden, parity
    clock = _Clock(variant)
    root = Path(staging)
    built = clock.run("build", build, get_variant(variant), **build_args)
    artifacts = []
    if ships_savedmodel:
        sm = clock.run("savedmodel", savedmodel.export, built, root, version=version,
                       assets_writer=write_warmup_requests)
        artifacts.append(sm.relative_to(root))
    else:
        clock.run("savedmodel", savedmodel.write_saved_model, built.model,
                  saved_model_dir(root, variant, version, False), built.input_size, built.spec.aspect)
    ref = clock.run("golden", golden.make, built)
    golden.save(root, ref)
    meta = {"spec": built.spec.to_dict(), "num_classes": built.num_classes, "labels": built.labels,
            "params": param_counts(built.model), **io_spec(built.model), "weights": built.weights,
            "training": run["provenance"] if run else None,
            "image": built.spec.image_contract(built.input_size).to_dict()}
    source = {"input_size": built.input_size, "labels": built.labels, "num_classes": built.num_classes,
              "weights": built.weights}
    reference = parity.reference_info(ref, "golden", list(batch_sizes))
    out = {"variant": variant, "task": "keras", "artifacts": artifacts, "meta": meta, "source": source,
           "reference": reference, "environment": parity.environment()}
    if not reference.ok:  # stop early: no gate, no parity rows, no conversions (see the module doc)
        reference.failures.append(NOT_CONVERTED)
        return {**out, "results": [], "timings": clock.timings(), "gate": None, "accuracy": [], "quantization": {},
                "stop": reference.failures[0]}
    from export.pipeline import gate_stage
    work = root / WORK_DIR / variant  # the gate's scratch files, read by the converter tasks
    prepared = clock.run("eval", gate_stage.prepare, built, root, gate,
                         run["provenance"]["run"] if run else None, work,
                         saved_model_dir(root, variant, version, ships_savedmodel)) if gate else None
    del built
    results, accuracy, quant = _parity_and_gate(clock, ref, artifacts, root, prepared, threads, work, batch_sizes)
    return {**out, "results": results, "timings": clock.timings(), "gate": prepared, "accuracy": accuracy,
            "quantization": quant}


def _parity_and_gate(clock: _Clock, ref, artifacts: list, root: Path, prepared: dict[str, Any] | None,
                     threads: int, work: Path, batch_sizes: tuple[int, ...], repairer=None):
    """Parity of `artifacts` against golden, the accuracy gate measured on the same loaded runners,
    then the gate's verdicts (an int8 that fails may be repaired: a new file, so its parity is run
    again). Returns (parity results, gate results, quantization records); `artifacts` is updated."""
    from export.pipeline import gate_stage
    from export.quality import parity
    measured = gate_stage.Measured(prepared, work)
    _, results = clock.run("parity", parity.check_artifacts, ref, artifacts, root, source="golden",
                           batch_sizes=batch_sizes, num_threads=threads, while_loaded=measured.take)
    clock.seconds["parity"] -= measured.seconds  # the eval runs inside the parity check are the gate's
    clock.seconds["eval"] = clock.seconds.get("eval", 0.0) + measured.seconds
    before = {a.key: a.sha256 for a in artifacts}
    accuracy, quant = clock.run("eval", gate_stage.judge, artifacts, root, prepared, threads, work, repairer,
                                measured=measured)
    redo = [a for a in artifacts if a.sha256 != before[a.key]]
    if redo:
        _, again = clock.run("parity", parity.check_artifacts, ref, redo, root, source="golden",
                             batch_sizes=batch_sizes, num_threads=threads)
        rows: dict[str, list] = {}
        for r in [*(r for r in results if r.key not in {a.key for a in redo}), *again]:
            rows.setdefault(r.key, []).append(r)
        results = [r for a in artifacts for r in rows.get(a.key, [])]
    return results, accuracy, quant


def convert_task(*, variant: str, fmt: str, precisions: list[str], staging: str, version: int,
                 ships_savedmodel: bool, threads: int, batch_sizes: tuple[int, ...],
                 keras: dict[str, Any], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every `precisions` of `fmt` from the variant's SavedModel, then their parity against golden;
    `options` go to the exporter (e.g. the TFLite metadata's card). Nothing when the Keras task
    stopped (its reference failed its check)."""
    if keras.get("stop"):
        return {"variant": variant, "task": fmt, "artifacts": [], "results": [], "timings": [], "accuracy": [],
                "quantization": {}, "stopped": keras["stop"]}
    if fmt != "openvino":  # OpenVINO reads the SavedModel, and runs it, without TensorFlow (~5 CPU s to import)
        _setup_threads(threads)
    from export.core.registry import FORMATS
    from export.model.built import BuiltModel
    from export.model.variants import get_variant
    from export.quality import golden
    clock = _Clock(variant)
    root = Path(staging)
    src = keras["source"]
    # The exporters read the graph from the SavedModel; they need only the name, size and labels.
    built = BuiltModel(None, get_variant(variant), src["num_classes"], src["input_size"],
                       src["weights"], src["labels"])
    sm_dir = saved_model_dir(root, variant, version, ships_savedmodel)
    exporter = FORMATS[fmt].exporter_module()
    artifacts = []
    options = {**(options or {}), "saved_model_dir": sm_dir}
    from export.pipeline import gate_stage
    work = root / WORK_DIR / variant
    calibration = gate_stage.calibration_options(work, keras.get("gate"))
    for precision in sorted(precisions, key=lambda p: p != "fp32"):
        stage = "openvino_int8" if (fmt, precision) == ("openvino", "int8") else fmt  # NNCF's cost on its own
        art = clock.run(stage, exporter.export, built, root, precision,
                        **options, **(calibration if precision == "int8" else {}))
        if fmt == "onnx" and precision == "fp32":
            options["fp32_path"] = Path(art.path)  # int8 quantizes the fp32 file just written
        artifacts.append(art.relative_to(root))

    def repair(art, result, evaluate):
        from export.formats.quantize import QuantScheme
        from export.quality import repair_onnx as repair_mod

        def requantize(scheme):
            return exporter.export(built, root, "int8", **options, **calibration, scheme=scheme,
                                   overwrite=True).relative_to(root)
        images = calibration.get("calibration")
        if images is None:
            from export.model import samples
            images = samples.photos(built.input_size)
        scheme = QuantScheme(**{k: v for k, v in art.details["quantization"].items()
                                if k in QuantScheme.__dataclass_fields__ and k != "nodes_to_exclude"})
        return repair_mod.repair_onnx(art, result, requantize=requantize, evaluate=evaluate,
                                      fp32_path=options["fp32_path"], root=root, calibration=images, scheme=scheme)

    def repair_tflite(art, result, evaluate):
        from export.quality import repair_tflite as tflite_repair
        return tflite_repair.repair_exported(art, result, evaluate, built=built, root=root, export_options=options,
                                             calibration=calibration)

    def repair_openvino(art, result, evaluate):
        from export.quality.repair_openvino import repair_openvino as repair_ir
        control = gate_stage.accuracy_control(work, keras.get("gate"))  # judge() repairs only with an eval set

        def requantize():
            return exporter.export(built, root, "int8", **options, **calibration, accuracy_control=control,
                                   overwrite=True).relative_to(root)
        return repair_ir(art, result, requantize=requantize, evaluate=evaluate)

    repairer = {"onnx": repair if "fp32_path" in options else None, "tflite": repair_tflite,
                "openvino": repair_openvino}.get(fmt)
    results, accuracy, quant = _parity_and_gate(clock, golden.load(root, variant), artifacts, root, keras.get("gate"),
                                                threads, work, batch_sizes, repairer)
    return {"variant": variant, "task": fmt, "artifacts": artifacts, "results": results, "timings": clock.timings(),
            "accuracy": accuracy, "quantization": quant}
