"""The deploy choice (export.bench.recommend) on planted bench documents: the fastest row that passed
parity and the accuracy gate, by paired times; ties within noise go to the simpler deployment; the
speed-ups are the paired ones; each row against its own precision's ceiling."""
from __future__ import annotations

import json

import numpy as np
import pytest

from export.bench import recommend

pytestmark = pytest.mark.unit


def _row(key: str, hint: str = "", gflop: float = 7.7) -> dict:
    variant, rest = key.split("/")
    fmt, precision = rest.split("_")
    return {"key": key, "label": f"{key}@{hint}" if hint else key, "variant": variant, "format": fmt,
            "precision": precision, "precision_hint": hint, "gflop_per_image": gflop, "error": None, "skipped": None,
            "speedup_vs_fp32": {"sibling": f"{variant}/{fmt}_fp32", "by_batch": {}} if precision not in ("fp32", "fp16")
            and fmt != "openvino" else None,
            "speedup_vs_fastest_fp32": {"baseline": {}, "by_batch": {}} if hint else None}


def _doc(times: dict[str, float], spread: float = 0.02) -> dict:
    """Rows for `times` (label -> ms at batch 1; batch 8 at 6x) with 9 paired rounds of +-spread."""
    rng = np.random.default_rng(0)
    rows = [_row(*label.split("@")) for label in times]
    by_batch = {}
    for b, scale in (("1", 1.0), ("8", 6.0)):
        t = {k: list(ms * scale * (1 + spread * rng.uniform(-1, 1, 9))) for k, ms in times.items()}
        by_batch[b] = {"rounds": 9, "times_ms": t, "p50_ms": {k: float(np.median(v)) for k, v in t.items()},
                       "p25_ms": {k: float(np.percentile(v, 25)) for k, v in t.items()},
                       "p75_ms": {k: float(np.percentile(v, 75)) for k, v in t.items()}}
    return {"bundle": "heads-1", "artifacts": rows, "paired": {"dense": {"by_batch": by_batch}},
            "environment": {"cpu_model": "AMD EPYC"}, "settings": {"threads": 2},
            "ceiling": {"measurements": [{"library": "numpy", "gflops": 100.0}],
                        "by_precision": [{"precision": "int8", "library": "onnxruntime", "gflops": 1000.0},
                                         {"precision": "bf16", "library": "openvino", "skipped": "no bf16"}]}}


TIMES = {"dense/savedmodel_fp32": 60.0, "dense/onnx_fp32": 50.0, "dense/onnx_int8": 20.0,
         "dense/tflite_int8": 15.0, "dense/openvino_int8@f32": 12.0}


def _verdicts(failing_gate=(), failing_parity=()):
    parity = {k: "failed" if k in failing_parity else "passed" for k in TIMES}
    gate = {k.split("@")[0]: {"status": "failed" if k in failing_gate else "passed", "drop_points": 5.0
                              if k in failing_gate else 0.5} for k in TIMES}
    return parity, gate


def test_a_gate_passing_artifact_is_picked_over_a_faster_failing_one():
    doc = _doc(TIMES)
    recommend.apply_paired(doc)
    parity, gate = _verdicts(failing_gate=("dense/openvino_int8@f32",))
    rec = recommend.recommend(doc, parity, gate, {"dense"})
    assert [(e["batch"], e["label"]) for e in rec] == [(1, "dense/tflite_int8"), (8, "dense/tflite_int8")]
    e = rec[0]
    assert e["excluded"] == {"dense/openvino_int8@f32": "accuracy gate failed"}
    assert e["accuracy_drop_points"] == 0.5 and e["serve_backend"] == "tflite:int8"
    assert e["serve_command"] == "resnet-deploy serve heads-1 --local --model dense --backend tflite:int8"
    assert e["speedup_vs_savedmodel"] == pytest.approx(4.0, rel=0.06)  # paired: median of 60/15 per round
    # with the gate passing, the faster OpenVINO int8 wins; a parity failure excludes it just the same
    parity, gate = _verdicts()
    assert recommend.recommend(doc, parity, gate, {"dense"})[0]["serve_backend"] == "openvino:int8"
    parity, gate = _verdicts(failing_parity=("dense/openvino_int8@f32",))
    assert recommend.recommend(doc, parity, gate, {"dense"})[0]["excluded"] == {
        "dense/openvino_int8@f32": "parity failed"}


def test_ties_within_noise_go_to_the_simpler_deployment():
    times = {**TIMES, "dense/onnx_int8": 12.1}  # ONNX int8 within noise of OpenVINO int8
    doc = _doc(times, spread=0.05)
    recommend.apply_paired(doc)
    e = recommend.recommend(doc, *_verdicts(), {"dense"})[0]
    assert e["label"] == "dense/onnx_int8" and e["within_noise"] == ["dense/openvino_int8@f32"]
    assert e["note"].startswith("within noise of dense/openvino_int8@f32")
    # far apart (2 % spread, 20 % faster): no tie
    doc = _doc({**TIMES, "dense/onnx_int8": 14.4})
    recommend.apply_paired(doc)
    assert recommend.recommend(doc, *_verdicts(), {"dense"})[0]["label"] == "dense/openvino_int8@f32"


def test_a_slower_row_with_a_wide_spread_does_not_tie_with_a_steady_faster_one():
    """Session 6's bench on dense, batch 1: ONNX int8 at 13.2 ms (IQR 13.0-17.0) was named 'within noise'
    of OpenVINO int8 at 11.0 ms, since the p50s differed by less than ONNX's wide IQR; in no round was it
    as fast. The paired rounds decide: a tie needs a quarter of them or more."""
    doc = _doc(TIMES, spread=0.0)
    rounds = doc["paired"]["dense"]["by_batch"]["1"]
    rounds["times_ms"]["dense/openvino_int8@f32"] = [11.0, 10.9, 11.1, 11.0, 10.8, 11.2, 11.0, 10.9, 11.1]
    rounds["times_ms"]["dense/onnx_int8"] = [13.0, 13.1, 17.0, 13.2, 16.8, 13.0, 17.2, 13.2, 13.3]
    for k in ("dense/openvino_int8@f32", "dense/onnx_int8"):
        t = rounds["times_ms"][k]
        rounds["p50_ms"][k], rounds["p25_ms"][k], rounds["p75_ms"][k] = (
            float(np.median(t)), float(np.percentile(t, 25)), float(np.percentile(t, 75)))
    assert rounds["p50_ms"]["dense/onnx_int8"] - 11.0 < rounds["p75_ms"]["dense/onnx_int8"] - rounds["p25_ms"]["dense/onnx_int8"]
    recommend.apply_paired(doc)
    e = recommend.recommend(doc, *_verdicts(), {"dense"})[0]
    assert e["label"] == "dense/openvino_int8@f32" and e["within_noise"] == [] and e["note"] == ""
    # as fast in 3 of the 9 rounds (a third): a tie, and the simpler ONNX Runtime is named
    rounds["times_ms"]["dense/onnx_int8"][:3] = [10.8, 10.9, 11.0]
    e = recommend.recommend(doc, *_verdicts(), {"dense"})[0]
    assert e["label"] == "dense/onnx_int8" and e["within_noise"] == ["dense/openvino_int8@f32"]


def test_rows_get_paired_speedups_and_their_own_ceiling():
    doc = _doc(TIMES, spread=0.0)
    recommend.apply_paired(doc)
    rows = {r["label"]: r for r in doc["artifacts"]}
    assert rows["dense/onnx_int8"]["speedup_vs_fp32"]["by_batch"] == {"1": 2.5, "8": 2.5}
    assert rows["dense/onnx_int8"]["speedup_vs_fp32"]["source"] == "paired"
    ov = rows["dense/openvino_int8@f32"]
    assert ov["speedup_vs_fastest_fp32"]["baseline"] == {"1": "dense/onnx_fp32", "8": "dense/onnx_fp32"}
    assert ov["ceiling_precision"] == "int8" and rows["dense/onnx_fp32"]["ceiling_precision"] == "fp32"
    # 7.7 GFLOP x 8 images / 72 ms = 855.6 GOP/s against the int8 ceiling of 1000 GOP/s
    assert ov["pct_of_own_ceiling"] == pytest.approx(100 * (7.7 * 8 / 0.072) / 1000, abs=0.01)
    # 7.7 x 8 / 300 ms = 205.3 GFLOP/s against the fp32 ceiling of 100 (a planted number)
    assert rows["dense/onnx_fp32"]["pct_of_own_ceiling"] == pytest.approx(100 * (7.7 * 8 / 0.3) / 100, abs=0.01)
    assert rows["dense/savedmodel_fp32"]["speedup_vs_savedmodel"] is None
    doc["recommended"] = recommend.recommend(doc, *_verdicts(), {"dense"})
    md = "\n".join(recommend.render(doc) + recommend.ceilings_table(doc))
    assert md.startswith("## Which file to deploy on this machine")
    assert "| dense | 1 | `dense/openvino_int8@f32` | 12.0 | **5.00×** | 0.5 |" in md
    assert "| dense/openvino_int8@f32 | int8 |" in md


def test_each_row_is_held_to_the_ceiling_gemms_of_its_own_rounds():
    """With the int8 GEMMs timed in the paired rounds, an int8 row's % of its ceiling is the median over
    the rounds of its rate / the fastest int8 GEMM in that round: a slow round slows both alike. The
    run's best GEMM (1000 GOP/s, from a quiet moment) no longer decides it. fp32 rows the same, against
    ONNX Runtime's fp32 MatMul in the rounds; a bench.json without GEMMs in its rounds: the run's best."""
    from export.bench import targets
    doc = _doc(TIMES, spread=0.0)
    ops = 2.0 * 2048 ** 3
    doc["paired"]["dense"]["ceiling_kernels"] = {
        "int8:onnxruntime": {"precision": "int8", "library": "onnxruntime", "kernel": "-", "ops": ops},
        "int8:openvino": {"precision": "int8", "library": "openvino", "kernel": "-", "ops": ops},
        "fp32:onnxruntime": {"precision": "fp32", "library": "onnxruntime", "kernel": "-", "ops": ops}}
    # rounds 0-4 quiet, 5-8 at 2/3 speed: the rows and the GEMMs alike
    slow = [1.0] * 5 + [1.5] * 4
    for entry in doc["paired"]["dense"]["by_batch"].values():
        entry["times_ms"] = {k: [t * s for s in slow] for k, t in entry["p50_ms"].items()}
        entry["ceiling_ms"] = {"int8:onnxruntime": [20.0 * s for s in slow],   # 859 GOP/s, then 573
                               "int8:openvino": [25.0 * s for s in slow],      # slower: never the ceiling
                               "fp32:onnxruntime": [80.0 * s for s in slow]}   # 215 GFLOP/s, then 143
    recommend.apply_paired(doc)
    rows = {r["label"]: r for r in doc["artifacts"]}
    ov, onnx = rows["dense/openvino_int8@f32"], rows["dense/onnx_fp32"]
    # batch 8, 72 ms against 20 ms for 2 * 2048^3 ops: (7.7e9 * 8 / 72) / (ops / 20) in every round
    assert ov["pct_of_own_ceiling"] == pytest.approx(100 * (7.7e9 * 8 / 72) / (ops / 20), abs=0.01)
    # fp32: 300 ms at batch 8 against ONNX Runtime's MatMul in the same rounds (80 ms), not the run's best
    # matmul (100 GFLOP/s, which would read 205 %)
    assert onnx["pct_of_own_ceiling"] == pytest.approx(100 * (7.7e9 * 8 / 300) / (ops / 80), abs=0.01)
    # the unpaired way holds the row's p50 to the run's best GEMM (1000 GOP/s, timed in a quieter moment)
    unpaired = 100 * 7.7 * 8 / 0.072 / 1000
    assert unpaired == pytest.approx(85.6, abs=0.1) and ov["pct_of_own_ceiling"] == pytest.approx(99.6, abs=0.1)
    results = {t.target.key: t for t in targets.evaluate(doc)}
    # batch 1, the fastest int8 (OpenVINO, 12 ms): 7.7e9 / 12 per ms against ops / 20
    assert results["int8_ceiling"].value == pytest.approx(100 * (7.7e9 / 12) / (ops / 20), abs=0.01)
    assert "paired" in results["int8_ceiling"].target.what
    md = "\n".join(recommend.ceilings_table(doc))
    assert "The ceiling GEMMs also ran in each variant's paired rounds" in md
    assert f"| dense/onnx_fp32 | fp32 | {onnx['pct_of_own_ceiling']:.1f} |" in md
    assert f"| dense/openvino_int8@f32 | int8 | {ov['pct_of_own_ceiling']:.1f} |" in md
    # without the GEMMs in its rounds (an older bench.json): the run's best, as before
    del doc["paired"]["dense"]["ceiling_kernels"]
    recommend.apply_paired(doc)
    again = {r["label"]: r for r in doc["artifacts"]}
    assert again["dense/openvino_int8@f32"]["pct_of_own_ceiling"] == pytest.approx(unpaired, abs=0.01)
    assert again["dense/onnx_fp32"]["pct_of_own_ceiling"] == pytest.approx(100 * (7.7 * 8 / 0.3) / 100, abs=0.01)
    assert "÷ that best" in "\n".join(recommend.ceilings_table(doc))


def test_verdicts_read_the_bundles_parity_and_gate(tmp_path):
    (tmp_path / "parity.json").write_text(json.dumps({"results": [
        {"key": "dense/openvino_int8", "precision_hint": "bf16", "device_requested": "CPU", "status": "passed"},
        {"key": "dense/onnx_fp32", "precision_hint": "", "device_requested": "GPU:0", "status": "skipped"},
        {"key": "dense/onnx_fp32", "precision_hint": "", "device_requested": "CPU", "status": "passed"}]}))
    (tmp_path / "manifest.json").write_text(json.dumps({"accuracy": {"variants": {"dense": {"artifacts": {
        "dense/openvino_int8": {"status": "passed", "drop_points": 0.0}}}}}}))
    parity, gate = recommend.verdicts(tmp_path)
    assert parity == {"dense/openvino_int8@bf16": "passed", "dense/onnx_fp32": "passed"}
    assert gate["dense/openvino_int8"] == {"status": "passed", "drop_points": 0.0, "variant": "dense"}


@pytest.mark.parametrize(("row", "backend"), [
    ({"format": "savedmodel", "precision": "fp32"}, "savedmodel"),
    ({"format": "onnx", "precision": "fp32"}, "onnx"),
    ({"format": "tflite", "precision": "int8"}, "tflite:int8"),
    ({"format": "openvino", "precision": "fp16", "precision_hint": "bf16"}, "openvino:bf16"),
    ({"format": "openvino", "precision": "int8", "precision_hint": "f32"}, "openvino:int8"),
    ({"format": "openvino", "precision": "int8", "precision_hint": "bf16"}, "openvino:int8-bf16")])
def test_serve_backend_names_what_serve_accepts(row, backend):
    from serving.backends.registry import backend_choice
    assert recommend.serve_backend(row) == backend
    fmt, _, choice = backend.partition(":")
    precision, hint = backend_choice(fmt, choice)
    assert (precision or ("fp16" if fmt == "openvino" else row["precision"])) == row["precision"]
    assert (hint or "f32") == (row.get("precision_hint") or "f32")
