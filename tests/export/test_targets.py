"""The targets table: every target judged from a bench document, pass / FAIL / not measured,
and bench.md opens with it."""
from __future__ import annotations

import pytest

from export.bench.targets import TARGETS, evaluate, render_markdown

pytestmark = pytest.mark.unit


def _doc(**changes):
    doc = {
        "seconds": 250.0,
        "export_run": {"wall_s": 200.0, "cpu_s": 340.0, "cpu_per_wall": 1.7, "peak_total_rss_mb": 5800.0,
                       "workers": 2, "load_average_start": [0.4], "pool": {"tasks": {"dense:onnx": {"peak_rss_mb": 2900}}}},
        "paired": {"dense": {"speedups": {"onnx_int8_vs_onnx_fp32": 2.9, "tflite_int8_vs_fastest_fp32": 3.7},
                             "fastest_fp32": "dense/onnx_fp32"},
                   "conv": {"speedups": {"onnx_int8_vs_onnx_fp32": 2.4, "tflite_int8_vs_fastest_fp32": 3.6},
                            "fastest_fp32": "conv/onnx_fp32"}},
        "ceiling": {"gflops": 200.0},
        "artifacts": [{"variant": "dense", "format": "onnx", "precision": "fp32", "pct_of_ceiling": 90.0},
                      {"variant": "dense", "format": "tflite", "precision": "fp32", "pct_of_ceiling": 70.0},
                      {"variant": "conv", "format": "onnx", "precision": "fp32", "pct_of_ceiling": 86.0}],
        "serving": {"grpc_overhead": {"added_pct": 9.0, "backend": "savedmodel", "model": "dense",
                                      "grpc_p50_ms": 76.3, "raw_p50_ms": 70.0, "encode_p50_ms": 0.4},
                    "batching": [{"backend": "savedmodel", "gain": 1.45}, {"backend": "onnx", "gain": 1.1}],
                    "target_backend": "savedmodel"},
    }
    doc.update(changes)
    return doc


def test_every_target_judged():
    results = {r.target.key: r for r in evaluate(_doc())}
    assert set(results) == {t.key for t in TARGETS}
    assert results["export_wall"].passed and results["export_cpu"].passed and results["export_rss"].passed
    assert results["onnx_int8"].value == 2.4 and results["onnx_int8"].passed is False  # worst variant
    assert "conv 2.40, dense 2.90" in results["onnx_int8"].detail
    assert results["tflite_int8"].value == 3.6 and results["tflite_int8"].passed
    assert results["fp32_ceiling"].value == 86.0 and "dense onnx 90 %" in results["fp32_ceiling"].detail
    assert results["fp32_ceiling"].detail.endswith("(each artifact in its own process (no paired rounds))")
    assert results["grpc_overhead"].passed and "encoding 0.40 ms" in results["grpc_overhead"].detail
    assert results["batching_gain"].value == 1.45 and results["batching_gain"].passed
    assert results["bench_wall"].passed


def test_the_fp32_ceiling_row_reads_the_paired_rounds_not_the_isolated_processes():
    """Issue 25: one timing per artifact that a reader can trust. With paired rounds in the document, the
    fp32 row's % is the paired one (bench.md's ceilings table), whatever each artifact's own process gave."""
    def paired(p50_b8: float) -> dict:
        return {"1": {"p50": p50_b8 / 8}, "8": {"p50": p50_b8}}
    rows = [{"variant": "conv", "format": "savedmodel", "precision": "fp32", "pct_of_ceiling": 65.0,
             "pct_of_own_ceiling": 54.1, "gflop_per_image": 8.2, "paired_ms": paired(400.0)},
            {"variant": "conv", "format": "onnx", "precision": "fp32", "pct_of_ceiling": 61.5, "pct_of_own_ceiling": 81.1,
             "gflop_per_image": 8.2, "paired_ms": paired(328.0)},
            {"variant": "conv", "format": "openvino", "precision": "int8", "pct_of_ceiling": None,
             "pct_of_own_ceiling": 103.8},  # an int8 row: held to its own ceiling, not in this target
            {"variant": "dense", "format": "onnx", "precision": "fp32", "pct_of_ceiling": 83.9, "pct_of_own_ceiling": 73.0,
             "gflop_per_image": 7.7, "paired_ms": paired(385.0)}]
    doc = _doc(artifacts=rows)
    doc["paired"]["conv"]["ceiling_kernels"] = {"fp32:onnxruntime": {"precision": "fp32"}}
    (row,) = [r for r in evaluate(doc) if r.target.key == "fp32_ceiling"]
    assert row.value == 73.0 and row.passed is False
    # and, shown beside it, the same paired times against the run's best matmul (200 GFLOP/s): conv
    # 8 x 8.2 GFLOP in 328 ms = 200 GFLOP/s (100 %), dense 8 x 7.7 in 385 ms = 160 (80 %)
    assert row.detail == ("conv onnx 81 %, dense onnx 73 % of the fp32 GEMM timed in the same rounds (paired rounds, "
                          "largest batch); against the run's best matmul, 200.0 GFLOP/s (shown, not judged): "
                          "conv 100 %, dense 80 %")
    # paired rounds that held no fp32 GEMM (a bench.json from before they did): the rows were held to the run's best
    del doc["paired"]["conv"]["ceiling_kernels"]
    (row,) = [r for r in evaluate(doc) if r.target.key == "fp32_ceiling"]
    assert row.detail == "conv onnx 81 %, dense onnx 73 % of 200.0 GFLOP/s, the run's best matmul (paired rounds, largest batch)"


def test_the_export_row_says_when_training_ran_beside_the_export():
    """A run that trained heads overlaps training with the export (export.pipeline.run): its export time
    holds that training, and the row says so; with training cached it says nothing of it."""
    run = _doc()["export_run"]
    beside = {r.target.key: r for r in evaluate(_doc(export_run={**run, "training": {"beside_export_s": 181.4}}))}
    assert "181 s of training ran beside the export" in beside["export_wall"].detail
    cached = {r.target.key: r for r in evaluate(_doc(export_run={**run, "training": {"beside_export_s": 0.2}}))}
    assert "training ran beside" not in cached["export_wall"].detail


def test_the_export_row_splits_its_time_and_gives_the_floor_its_cpu_time_sets_on_these_cores():
    """The export row says what the pool and the end-to-end stage took, and that 739 CPU s on 2 cores
    cannot take under 370 s (the export's own record: <bundle>.export.json)."""
    run = {**_doc()["export_run"], "wall_s": 392.0, "cpu_s": 739.1, "cpu_count": 2,
           "pool": {"wall_s": 250.8, "cpu_s": 474.5, "tasks": {}},
           "stages": [{"variant": "dense", "stage": "tflite", "seconds": 50.2},
                      {"variant": "all", "stage": "e2e", "seconds": 131.6}]}
    row = {r.target.key: r for r in evaluate(_doc(export_run=run))}["export_wall"]
    assert row.value == 392.0 and row.passed is False
    assert "conversions, parity and the accuracy gate 251 s (474 CPU s)" in row.detail
    assert "end-to-end parity from files 132 s" in row.detail
    assert "739 CPU s over 2 cores take at least 370 s" in row.detail
    plain = {r.target.key: r for r in evaluate(_doc())}["export_wall"]  # an older record: none of it
    assert "CPU s over" not in plain.detail and "end-to-end" not in plain.detail


def test_missing_measurements_are_not_measured_not_passed():
    results = {r.target.key: r for r in evaluate(_doc(export_run=None, serving={"error": "server did not start"},
                                                      paired={}))}
    for key in ("export_wall", "onnx_int8", "grpc_overhead", "batching_gain"):
        assert results[key].passed is None and results[key].value is None
    assert "run make export" in results["export_wall"].detail
    assert "server did not start" in results["grpc_overhead"].detail


def test_table_rows_and_verdicts():
    lines = render_markdown(evaluate(_doc()))
    assert lines[0] == "## Targets"
    table = [ln for ln in lines if ln.startswith("| ") and "---" not in ln][1:]
    assert len(table) == len(TARGETS)
    assert any("ONNX int8" in ln and "**FAIL**" in ln and "2.40x" in ln for ln in table)
    assert any("`make export` wall time" in ln and "**pass**" in ln and "200 s" in ln for ln in table)
    assert lines[-2] == "8 of 11 targets met (judged from the numbers of this run; see below)."


def test_paired_plan_takes_every_artifact_per_variant():
    from export.bench.paired import plan
    from export.formats import Artifact

    def art(variant, fmt, precision):
        return Artifact(path=f"{fmt}/{variant}/{precision}", format=fmt, precision=precision, variant=variant,
                        sha256="", bytes=0, inputs=[], outputs=[], tool_versions={}, seconds=0.0)
    arts = [art("dense", f, p) for f, p in (("savedmodel", "fp32"), ("tflite", "fp32"), ("tflite", "fp16"),
                                            ("tflite", "dynamic"), ("tflite", "int8"), ("onnx", "fp32"),
                                            ("onnx", "int8"))] + [art("conv", "tflite", "fp32")]
    chosen = plan(arts)
    assert list(chosen) == ["dense", "conv"], "every variant is timed in turn (the recommendation compares them all)"
    assert [a.key for a in chosen["dense"]] == [a.key for a in arts if a.variant == "dense"]


def test_batching_target_shows_the_runners_own_bound():
    doc = _doc()
    doc["serving"]["grpc_overhead"]["model"] = "dense"
    doc["artifacts"][0]["latency_ms"] = {"1": {"images_per_s": 10.0}, "8": {"images_per_s": 11.4}}
    (result,) = [r for r in evaluate(doc) if r.target.key == "batching_gain"]
    assert "upper bound, the runner's own batch-8 / batch-1 images/s: onnx 1.14x" in result.detail


def test_fastest_int8_against_fastest_fp32_and_the_int8_ceiling():
    """From the batch-1 paired rounds: any int8 row (OpenVINO at a hint too) against any fp32 row."""
    times = {"dense/onnx_fp32": [40.0, 44.0, 42.0], "dense/tflite_int8": [12.0, 12.0, 12.0],
             "dense/openvino_int8@f32": [10.0, 11.0, 12.0], "dense/savedmodel_fp32": [60.0, 60.0, 60.0]}
    rows = [{"label": k, "variant": "dense", "precision": k.split("_")[-1].split("@")[0], "gflop_per_image": 7.7}
            for k in times]
    doc = _doc(artifacts=rows, paired={"dense": {"by_batch": {"1": {
        "times_ms": times, "p50_ms": {k: sorted(v)[1] for k, v in times.items()}}}}},
        ceiling={"gflops": 200.0, "measurements": [], "by_precision": [{"precision": "int8", "gflops": 1000.0,
                                                                        "library": "openvino"}]})
    results = {r.target.key: r for r in evaluate(doc)}
    assert results["int8_best"].value == 4.0 and results["int8_best"].passed  # median of 4.0, 4.0, 3.5
    assert results["int8_best"].detail == "dense: dense/openvino_int8@f32 4.00x dense/onnx_fp32"
    assert results["int8_ceiling"].value == pytest.approx(100 * 7.7 / 0.011 / 1000)  # 70 % of 1000 GOP/s
    assert results["int8_ceiling"].passed is True


def test_fastest_int8_is_also_shown_against_a_faster_float_row_of_fp16_weights_but_judged_on_fp32():
    """OpenVINO's IR (fp16 weights, f32 arithmetic at the f32 hint) faster than every fp32 artifact: the
    row still judges against fp32, and shows the ratio against that IR too; its bf16 hint is not float32."""
    times = {"dense/onnx_fp32": [40.0, 44.0, 42.0], "dense/openvino_int8@f32": [10.0, 11.0, 12.0],
             "dense/openvino_fp16@f32": [30.0, 33.0, 30.0], "dense/openvino_fp16@bf16": [15.0, 15.0, 15.0]}
    rows = [{"label": k, "variant": "dense", "precision": k.split("_")[-1].split("@")[0], "gflop_per_image": 7.7}
            for k in times]
    doc = _doc(artifacts=rows, paired={"dense": {"by_batch": {"1": {
        "times_ms": times, "p50_ms": {k: sorted(v)[1] for k, v in times.items()}}}}})
    (row,) = [r for r in evaluate(doc) if r.target.key == "int8_best"]
    assert row.value == 4.0 and row.passed  # against ONNX fp32, as before
    assert row.detail == ("dense: dense/openvino_int8@f32 4.00x dense/onnx_fp32; against the fastest float row of "
                          "any weight precision (f32 arithmetic, shown, not judged): dense 3.00x dense/openvino_fp16@f32")
    times["dense/openvino_fp16@f32"] = [50.0, 50.0, 50.0]  # slower than ONNX fp32: nothing more to show
    doc["paired"]["dense"]["by_batch"]["1"]["p50_ms"]["dense/openvino_fp16@f32"] = 50.0
    (row,) = [r for r in evaluate(doc) if r.target.key == "int8_best"]
    assert row.detail == "dense: dense/openvino_int8@f32 4.00x dense/onnx_fp32"


def test_paired_rounds_follow_the_rounds_asked_for():
    """`bench --rounds N`: N rounds at batch 1; larger batches half as many, at least 5, but never
    more than were asked for (the default 15 gives 8; --rounds 4 gives 4 at every batch size)."""
    from export.bench.paired import ROUNDS, rounds_at
    assert [rounds_at(b) for b in (1, 2, 8)] == [ROUNDS, 8, 8] and ROUNDS == 15
    assert [rounds_at(b, 4) for b in (1, 8)] == [4, 4]
    assert [rounds_at(b, 30) for b in (1, 8)] == [30, 15]
    assert [rounds_at(b, 7) for b in (1, 8)] == [7, 5]
