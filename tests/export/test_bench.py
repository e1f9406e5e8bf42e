"""`resnet-deploy bench` on a small real bundle: the JSON schema, every artifact present, ratios
and percentages computed from the measured numbers, the files written beside the bundle and the
bundle left byte for byte as it was (its signature still verifying); a changed bundle refused, a
locked dist/ respected. No test asserts a timing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from export.bench import flops as flops_mod
from export.bench import results as bench_results
from export.bench import run as bench
from export.bench.document import BenchReport
from export.bundle import layout as bundle
from export.bundle import packing
from export.core.errors import BundleError, UsageError
from tests.helpers import demo_bundle, has_bf16, link_tree, run_cli, run_main

#: The artifacts of the small bundle: dense, fp32 and int8 of every format, and the OpenVINO IR
#: (measured twice: at the f32 and the bf16 precision hint).
KEEP = ("dense/savedmodel_fp32", "dense/tflite_fp32", "dense/tflite_int8", "dense/onnx_fp32", "dense/onnx_int8",
        "dense/openvino_fp16")
LABELS = (*KEEP[:-1], "dense/openvino_fp16@f32", "dense/openvino_fp16@bf16")


BENCH_ARGS = ("--threads", "1", "--warmup", "0", "--runs", "2", "--rounds", "4", "--batch-sizes", "1,2",
              "--no-serving")


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory, exported):
    """A bundle `bench-smoke-1/` in the pipeline's layout (manifest, golden files, README, tarball,
    signature) made of the session's shared dense export, then benchmarked once by the CLI.
    Returns the bundle, the bench document, the CLI's result and what the bundle was before."""
    from export.bundle import signing
    from export.bundle.manifest import Manifest, ParitySummary, StageTiming, VariantRecord
    from export.formats import Artifact, tool_versions
    from export.model.build import io_spec, param_counts
    from export.quality import golden
    from tests.export import pki
    built, out, arts = exported("dense")
    out = Path(out)
    if not golden.exists(out, "dense"):
        golden.save(out, golden.make(built))
    root = tmp_path_factory.mktemp("bench") / "bench-smoke-1"
    kept = []
    for key in KEEP:
        a = arts[key]
        src = Path(a.path) if os.path.isabs(a.path) else out / a.path
        rel = os.path.relpath(src, out)
        for part in [src] if src.is_dir() else sorted(src.parent.glob(src.stem + ".*")):  # IR: .xml + .bin
            link_tree(part, root / os.path.relpath(part, out))
        kept.append({**a.to_dict(), "path": rel})
    link_tree(out / "golden" / "dense", root / "golden" / "dense")
    (root / "README.md").write_text("# bench-smoke-1\n\nA bundle made before benchmarks existed.\n")
    # parity.json as the pipeline writes it (CPU rows): all pass but TFLite int8, which the
    # recommendation must then leave out; no accuracy gate (no eval set) in this bundle
    (root / "parity.json").write_text(json.dumps({"results": [
        {"key": label.split("@")[0], "precision_hint": label.partition("@")[2], "device_requested": "CPU",
         "status": "failed" if label == "dense/tflite_int8" else "passed"} for label in LABELS]}))
    bundle.write_manifest(root, Manifest(
        name="bench-smoke", version=1, created_at="2024-01-01T00:00:00+00:00",
        tool_versions=tool_versions(), config="test",
        variants={"dense": VariantRecord(spec=built.spec.to_dict(), num_classes=built.num_classes,
                                         labels=built.labels, params=param_counts(built.model),
                                         **io_spec(built.model), weights=built.weights)},
        artifacts=[Artifact.from_dict(a) for a in kept],
        parity=ParitySummary(passed=True, failures=["none: kept by bench"]),
        export_timings=[StageTiming("dense", "export", round(sum(a["seconds"] for a in kept), 2)),
                        StageTiming("all", "pack", 1.5)],
        extra={"provenance_note": "a field this version does not know"},
    ))
    keys = tmp_path_factory.mktemp("keys")
    private, public, _ = pki.write_key_pair(keys, "publisher")
    signing.sign_bundle(root, private)
    packing.pack(root)
    tar = root.with_name("bench-smoke-1.tar.gz")
    before = {"files": bundle.file_table(root), "manifest": (root / bundle.MANIFEST).read_bytes(),
              "signature": (root / "signature.sig").read_bytes(), "tarball": tar.read_bytes(),
              "export_seconds": round(sum(a["seconds"] for a in kept), 2), "public_key": public}
    r = run_cli("bench", str(root), *BENCH_ARGS, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((root.with_name("bench-smoke-1.bench") / "bench.json").read_text())
    return root, doc, r, before


ROW_FIELDS = {"load_1m": float, "key": str, "variant": str, "format": str, "precision": str, "path": str, "bytes": int,
              "gflop_per_image": float, "device": str, "load_s": float, "first_inference_s": float,
              "latency_ms": dict, "peak_rss_mb": float, "rss_load_mb": float, "top1": dict, "wall_s": float}
STAT_FIELDS = {"runs": int, "p50": float, "p90": float, "max": float, "mean": float, "min": float,
               "images_per_s": float}


@pytest.mark.e2e
def test_bench_json_schema(small_bundle):
    _, doc, _, before = small_bundle
    assert doc["format_version"] == bench.BENCH_FORMAT_VERSION and doc["bundle"] == "bench-smoke-1"
    assert set(doc) >= {"created_at", "environment", "settings", "ceiling", "flops", "artifacts",
                        "export_timings", "export_total_s", "files", "seconds"}
    env = doc["environment"]
    assert env["cpu_model"] and env["threads"] == 1 and env["logical_cpus"] >= 1
    assert set(env["tool_versions"]) >= {"tensorflow", "onnxruntime", "ai-edge-litert", "numpy", "matplotlib"}
    s = doc["settings"]
    assert s["threads"] == 1 and s["warmup"] == 0 and s["batch_sizes"] == [1, 2]
    assert s["runs"] == {"1": 2, "2": 1} and "fresh Python process" in s["isolation"]
    assert s["paired_rounds"] == {"1": 4, "2": 4}  # --rounds 4; larger batches: half, at least 5 or all asked for
    assert {b: p["rounds"] for b, p in doc["paired"]["dense"]["by_batch"].items()} == s["paired_rounds"]
    c = doc["ceiling"]
    assert c["error"] is None and c["threads"] == 1 and c["n"] == bench.CEILING_N
    assert sorted((m["library"], m["when"]) for m in c["measurements"]) == sorted(
        (lib, when) for lib in bench.CEILING_LIBRARIES for when in ("start", "end"))
    for m in c["measurements"]:
        assert isinstance(m["gflops"], float) and m["gflops"] > 0 and isinstance(m["gflops_median"], float)
        assert len(m["seconds"]) == bench.CEILING_REPS and m["kernel"]
    assert c["gflops"] == max(m["gflops"] for m in c["measurements"])
    assert set(env["cpu_features"]) == {"AMX-BF16", "AMX-INT8", "AVX512-BF16", "AVX512-VNNI", "AVX-VNNI"}
    for row in doc["artifacts"]:
        assert row["error"] is None, row
        if row["skipped"]:
            assert row["label"] == "dense/openvino_fp16@bf16" and not has_bf16()
            assert row["skipped"] == "skipped: no bf16 hardware" and row["latency_ms"] == {}
            continue
        for name, kind in ROW_FIELDS.items():
            assert isinstance(row[name], kind), (row["key"], name, row[name])
        assert set(row["latency_ms"]) == {"1", "2"}
        for b, stats in row["latency_ms"].items():
            for name, kind in STAT_FIELDS.items():
                assert isinstance(stats[name], kind), (row["key"], b, name)
            assert stats["runs"] == s["runs"][b]
            assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["max"]
        t = row["top1"]
        assert t["total"] == 12 and len(t["photos"]) == 12 and "astronaut" in t["photos"]
        assert t["agreement"] == pytest.approx(t["agree"] / t["total"], abs=1e-4)
        assert row["device"].startswith("CPU")
        for name in ("achieved_gflops", "pct_of_ceiling", "achieved_at_batch", "speedup_vs_fp32",
                     "speedup_vs_fastest_fp32"):
            assert name in row
    # OpenVINO's per-layer counters on the f32-hint row only (bench.LAYER_PROFILE): ResNet50's 53
    # convolutions and the preprocessing's 1x1, whose operations add up to the hand-counted backbone's
    # (export.bench.flops) plus that 1x1's, every one on a float kernel (an fp16 IR at the f32 hint)
    profiled = {r["label"]: r["layer_profile"] for r in doc["artifacts"] if r.get("layer_profile")}
    assert set(profiled) == {"dense/openvino_fp16@f32"}
    p = profiled["dense/openvino_fp16@f32"]
    assert sum(g["layers"] for g in p["groups"]) == 54 == len(p["float_convolutions"])
    assert sum(g["gop"] for g in p["groups"]) == pytest.approx(doc["flops"]["dense"]["backbone"] + 2 * 224 * 224 * 9 / 1e9,
                                                               abs=1e-4)
    assert p["batch"] == 1 and p["threads"] == 1 and 0 < p["nodes_ms"] and p["wall_ms"] > 0
    # The manifest's timings, copied: the fixture wrote the export's as the kept artifacts' seconds.
    assert doc["export_timings"] == [{"variant": "dense", "stage": "export", "seconds": before["export_seconds"]},
                                     {"variant": "all", "stage": "pack", "seconds": 1.5}]
    assert doc["export_total_s"] == round(before["export_seconds"] + 1.5, 2)


@pytest.mark.e2e
def test_litert_latency_with_one_and_two_threads(small_bundle):
    """Every .tflite row has batch-1 latency at 1 and 2 LiteRT threads (the registry's bench_threads);
    the 1-thread figures are the main measurement's (this run uses --threads 1), the 2-thread ones
    a process of their own; other formats have none."""
    root, doc, _, _ = small_bundle
    assert doc["settings"]["thread_sweep"] == {"tflite": [1, 2]}
    for row in doc["artifacts"]:
        if row["format"] != "tflite":
            assert row["thread_sweep"] is None
            continue
        t = row["thread_sweep"]
        assert set(t) == {"1", "2"}
        assert t["1"] == {k: row["latency_ms"]["1"][k] for k in ("runs", "p50", "p90", "max", "images_per_s")}
        assert t["2"]["runs"] == doc["settings"]["runs"]["1"] and t["2"]["p50"] <= t["2"]["max"]
    md = (root.with_name("bench-smoke-1.bench") / "bench.md").read_text()
    section = md.split("## Threads (batch 1): LiteRT on 1 and 2 cores")[1]
    assert "| `dense` tflite int8 | " in section and "| `dense` onnx fp32 | " not in section


@pytest.mark.e2e
def test_every_artifact_appears_once(small_bundle):
    root, doc, _, _ = small_bundle
    manifest = bundle.read_manifest(root)
    listed = {a.key: a for a in manifest.artifacts}
    rows = {r["label"]: r for r in doc["artifacts"]}
    assert len(rows) == len(doc["artifacts"]) and set(rows) == set(LABELS) and set(listed) == set(KEEP)
    for row in rows.values():
        assert row["bytes"] == listed[row["key"]].bytes and row["path"] == listed[row["key"]].path
    assert [rows[f"dense/openvino_fp16@{h}"]["precision_hint"] for h in ("f32", "bf16")] == ["f32", "bf16"]


@pytest.mark.e2e
def test_ratios_and_percentages_come_from_the_measured_numbers(small_bundle):
    _, doc, _, _ = small_bundle
    from export.bench.paired import paired_pct, paired_ratio
    rows = {r["label"]: r for r in doc["artifacts"] if not r["skipped"]}
    ceiling = doc["ceiling"]["gflops"]
    paired = doc["paired"]["dense"]["by_batch"]
    kernels = doc["paired"]["dense"]["ceiling_kernels"]
    assert doc["flops"]["dense"]["total"] == pytest.approx(2 * (3_855_925_248 + 2048 * 10) / 1e9, abs=1e-6)
    for r in rows.values():
        if r["precision_hint"]:  # OpenVINO: against the fastest fp32 artifact of another format
            sp = r["speedup_vs_fastest_fp32"]
            fp32 = [o for o in rows.values() if o["precision"] == "fp32" and o["format"] != "openvino"]
            for b, ratio in sp["by_batch"].items():  # paired: every artifact timed in turn, per-round ratios
                fastest = min(fp32, key=lambda o: o["paired_ms"][b]["p50"])
                assert sp["baseline"][b] == fastest["key"] and sp["source"] == "paired"
                assert ratio == paired_ratio(paired[b]["times_ms"], fastest["key"], r["label"])
            assert set(sp["by_batch"]) == {"1", "2"} and r["speedup_vs_fp32"] is None
            best = max(r["latency_ms"].values(), key=lambda st: st["images_per_s"])
            assert r["achieved_gflops"] == pytest.approx(r["gflop_per_image"] * best["images_per_s"], abs=0.006)
            # fp16 weights computing in f32, or in bf16 at the bf16 hint (a row that exists only where the
            # CPU has bf16 units: AVX512-BF16 or AMX)
            assert r["ceiling_precision"] == ("bf16" if r["precision_hint"] == "bf16" else "fp32")
            if r["ceiling_precision"] == "fp32":  # the fp32 matmul's %; a bf16 row has only its own (below)
                assert r["pct_of_ceiling"] == pytest.approx(100 * r["achieved_gflops"] / ceiling, abs=0.006)
            else:
                assert r["pct_of_ceiling"] is None
        elif r["precision"] == "fp32":
            best = max(r["latency_ms"].values(), key=lambda st: st["images_per_s"])
            assert r["achieved_gflops"] == pytest.approx(r["gflop_per_image"] * best["images_per_s"], abs=0.006)
            assert r["pct_of_ceiling"] == pytest.approx(100 * r["achieved_gflops"] / ceiling, abs=0.006)
            assert r["speedup_vs_fp32"] is None
        else:
            sp = r["speedup_vs_fp32"]
            sibling = rows[f"dense/{r['format']}_fp32"]
            assert sp["sibling"] == sibling["key"] and set(sp["by_batch"]) == {"1", "2"}
            for b, ratio in sp["by_batch"].items():
                assert ratio == paired_ratio(paired[b]["times_ms"], sibling["key"], r["label"])
            assert r["achieved_gflops"] is None and r["pct_of_ceiling"] is None
        assert set(r["paired_ms"]) == {"1", "2"} and r["ceiling_precision"] in ("fp32", "int8", "bf16")
        # every row against the GEMMs of its precision timed in the same rounds (export.bench.paired.paired_pct),
        # at batch 2: fp32 rows against ONNX Runtime's fp32 MatMul, int8 (and bf16) rows against theirs
        assert r["pct_of_own_ceiling"] == paired_pct(paired["2"], kernels, r["label"], 2 * r["gflop_per_image"],
                                                     r["ceiling_precision"])
        assert r["pct_of_own_ceiling"] is not None
    # the fp32 and int8 GEMMs (and bf16's where the CPU has the units), timed in each round beside the rows
    assert {k: m["precision"] for k, m in kernels.items()} == {
        "fp32:onnxruntime": "fp32", "int8:onnxruntime": "int8", "int8:openvino": "int8",
        **({"bf16:openvino": "bf16"} if has_bf16() else {})}
    for entry in paired.values():
        assert set(entry["ceiling_ms"]) == set(kernels) and not set(entry["ceiling_ms"]) & set(entry["times_ms"])
        assert all(len(t) == entry["rounds"] and min(t) > 0 for t in entry["ceiling_ms"].values())
    assert all(m["ops"] == 2.0 * bench.CEILING_N ** 3 and m["kernel"] for m in kernels.values())


@pytest.mark.e2e
def test_markdown_chart_and_the_bundle_left_as_exported(small_bundle):
    root, doc, r, before = small_bundle
    out = root.with_name("bench-smoke-1.bench")
    md = (out / "bench.md").read_text()
    assert md.splitlines()[2] == "## Which file to deploy on this machine", "bench.md opens with the deploy choice"
    assert "\n## Targets\n" in md
    rec = {e["batch"]: e for e in doc["recommended"]}
    assert set(rec) == {1, 2} and all(e["variant"] == "dense" and e["label"] for e in rec.values())
    for b, e in rec.items():  # the fastest passing row, or a simpler one within noise of it
        eligible = {k: v for k, v in doc["paired"]["dense"]["by_batch"][str(b)]["p50_ms"].items()
                    if k != "dense/tflite_int8"}
        assert e["label"] in eligible and e["excluded"] == {"dense/tflite_int8": "parity failed"}
        assert e["label"] == min(eligible, key=eligible.get) or min(eligible, key=eligible.get) in e["within_noise"]
        assert e["accuracy_drop_points"] is None and "no eval set" in e["note"]
        assert e["serve_command"].startswith("resnet-deploy serve bench-smoke-1 ")
    targets = {t["key"]: t for t in doc["targets"]}
    assert targets["onnx_int8"]["value"] == doc["paired"]["dense"]["speedups"]["onnx_int8_vs_onnx_fp32"]
    assert targets["grpc_overhead"]["passed"] is None and "--no-serving" in targets["grpc_overhead"]["detail"]
    assert targets["export_wall"]["passed"] is None  # this bundle was not made by make export
    paired = doc["paired"]["dense"]
    assert set(paired["p50_ms"]) == set(LABELS) - ({"dense/openvino_fp16@bf16"} if not has_bf16() else set())
    assert paired["fastest_fp32"] == min((k for k in paired["p50_ms"] if k.endswith("fp32")),
                                         key=lambda k: paired["p50_ms"][k])
    assert "## Artifacts in turn: the timings every speed-up comes from" in md
    assert "## Where the time goes: OpenVINO's per-layer counters at batch 1" in md
    assert "| 1x1 conv @14x14 | 13 | " in md and "- `dense/openvino_fp16@f32`: " in md
    assert "54 convolution(s) ran a float kernel (`" in md
    assert md.strip() in r.stdout
    assert f"wrote {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}" in r.stdout
    assert "**1 thread**, device CPU; 0 warm-up runs then 2 timed runs at batch 1, 1 timed run at batch 2" in md
    assert "with 1 thread: per variant" in md and "single precision, 1 thread: the best of" in md
    assert doc["environment"]["cpu_model"] in md and "tensorflow 2." in md
    assert "## Machine ceiling" in md and "| numpy | " in md and "| tensorflow | " in md
    assert "## Each row against its own precision's ceiling" in md and "int8 **" in md
    assert "b1 p50 / p90 / max ms" in md and "b2 p50 / p90 / max ms" in md and "## Export pipeline" in md
    for key in KEEP[:-1]:
        variant, rest = key.split("/")
        fmt, precision = rest.split("_")
        assert f"| `{variant}` {fmt} {precision} |" in md
    assert "| `dense` openvino fp16 @ f32 |" in md and "| `dense` openvino fp16 @ bf16 |" in md
    assert ("**skipped: no bf16 hardware**" in md) != has_bf16()
    ov_f32 = next(line for line in md.splitlines() if line.startswith("| `dense` openvino fp16 @ f32 |"))
    assert "×** b1 vs " in ov_f32 and "×** b2 vs " in ov_f32
    rows = {r["label"]: r for r in doc["artifacts"]}
    onnx_row = next(line for line in md.splitlines() if line.startswith("| `dense` onnx int8 |"))
    assert f"| {rows['dense/onnx_int8']['pct_of_own_ceiling']:.1f} % int8 |" in onnx_row  # the paired %, own ceiling
    assert f"| {rows['dense/openvino_fp16@f32']['pct_of_own_ceiling']:.1f} % fp32 |" in ov_f32
    targets = {t["key"]: t for t in doc["targets"]}
    best_fp32 = max(r["pct_of_own_ceiling"] for r in rows.values() if r["precision"] == "fp32")
    assert targets["fp32_ceiling"]["value"] == best_fp32 and "(paired rounds, largest batch)" in targets["fp32_ceiling"]["detail"]
    assert "CPU features detected: AMX-BF16 " in md and ", AVX512-BF16 " in md and ", AVX512-VNNI " in md
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["files"] == [str(out / n) for n in ("bench.json", "bench.md", "bench.png", "report.html")]
    html = (out / "report.html").read_text()  # the bundle's report with the bench section (issue 26)
    assert 'id="chart-dense-latency"><svg' in html and doc["environment"]["cpu_model"] in html
    # The bundle is byte for byte what was exported and signed: nothing added, rewritten or removed.
    tar = root.with_name("bench-smoke-1.tar.gz")
    assert bundle.file_table(root) == before["files"] and not (root / "bench").exists()
    assert (root / bundle.MANIFEST).read_bytes() == before["manifest"]
    assert (root / "signature.sig").read_bytes() == before["signature"]
    assert tar.read_bytes() == before["tarball"]
    for target in (root, tar):
        v = run_cli("verify", str(target), "--skip-parity", "--public-key", str(before["public_key"]))
        assert v.returncode == 0 and "0 changed, 0 missing, 0 extra" in v.stdout, v.stdout + v.stderr


@pytest.mark.e2e
def test_busy_machine_is_flagged(small_bundle):
    from export.bench.report import render_markdown
    _, doc, _, _ = small_bundle
    quiet = json.loads(json.dumps(doc))
    quiet["environment"].update(load_average_start=[0.1, 0, 0], load_average_end=[0.2, 0, 0], logical_cpus=2)
    for r in quiet["artifacts"]:
        r["load_1m"] = 1.9
    assert "**Note:** the 1-minute load average" not in render_markdown(quiet)
    quiet["artifacts"][2]["load_1m"] = 3.7
    assert "**Note:** the 1-minute load average reached 3.7 on 2 CPUs" in render_markdown(quiet)


@pytest.mark.e2e
def test_out_elsewhere_leaves_the_bundle_untouched(small_bundle, tmp_path):
    root, doc, _, _ = small_bundle
    before = bundle.file_table(root)
    manifest = (root / bundle.MANIFEST).read_bytes()
    files = bench_results.write_results(root, BenchReport.from_dict(doc), tmp_path / "elsewhere")
    assert files == [str(tmp_path / "elsewhere" / n) for n in ("bench.json", "bench.md", "bench.png", "report.html")]
    assert all(Path(f).is_file() for f in files)
    assert bundle.file_table(root) == before and (root / bundle.MANIFEST).read_bytes() == manifest


@pytest.mark.unit
def test_flops_of_the_heads():
    from export.model.variants import get_variant
    macs, h, cin = flops_mod.resnet50_macs(224)
    assert (macs, h, cin) == (3_855_925_248, 7, 2048)  # 2 x 3.86 G = 7.7 GFLOP, Keras ResNet50 v1
    conv = get_variant("conv").to_dict()
    head = 7 * 7 * 9 * 2048 * 256 + 7 * 7 * 9 * 256 * 128 + 128 * 5
    flops = flops_mod.gflop_per_image({"spec": conv, "num_classes": 5})
    assert flops["head"] == pytest.approx(2 * head / 1e9, abs=1e-6) and flops["input_size"] == 224
    assert flops_mod.resnet50_macs(160)[1] == 5


@pytest.mark.unit
def test_each_timed_paired_run_follows_an_untimed_run_of_the_same_artifact(monkeypatch):
    """export.bench.paired: a runner whose first call after another runner's is slow (threads asleep,
    weights evicted) is timed on its second, back-to-back call; every round calls each runner twice.
    On a clock the runners advance (50 s cold, 1 s warm), so that no wall time is asserted."""
    import types

    from export.bench import paired
    clock = [0.0]
    monkeypatch.setattr(paired, "time", types.SimpleNamespace(perf_counter=lambda: clock[0], sleep=lambda s: None))
    calls: list[str] = []

    class Cold:
        def __init__(self, name: str) -> None:
            self.name = name

        def infer(self, feed) -> None:
            clock[0] += 1.0 if calls and calls[-1] == self.name else 50.0  # slow unless it just ran
            calls.append(self.name)

    times = paired._time_rounds({"a": Cold("a"), "b": Cold("b")}, {}, rounds=3, warmup=1)
    assert times == {"a": [1000.0] * 3, "b": [1000.0] * 3}  # ms: every timed run the warm one
    #                warm-up   round 1 (a first)     round 2 (b first)     round 3
    assert calls == ["a", "b", "a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]


@pytest.mark.unit
def test_latency_stats_of_known_runs():
    """Four runs of a 2-image batch at 10, 20, 30 and 40 ms: the figures worked out by hand."""
    from export.bench.worker import stats
    assert stats([0.010, 0.040, 0.020, 0.030], batch=2) == {
        "runs": 4, "p50": 25.0, "p90": 37.0, "max": 40.0, "mean": 25.0, "min": 10.0, "images_per_s": 80.0}


@pytest.mark.unit
def test_a_bundle_changed_after_export_is_refused_and_left_alone(tmp_path):
    root = demo_bundle(tmp_path / "dist" / "demo-1")
    (root / "tflite" / "demo" / "model_fp32.tflite").write_bytes(b"swapped weights")
    (root / "extra.txt").write_text("planted")
    manifest = (root / bundle.MANIFEST).read_bytes()
    with pytest.raises(BundleError, match=r"refusing to benchmark .*demo-1: its files do not match manifest\.json "
                                          r"\(changed: tflite/demo/model_fp32\.tflite; extra: extra\.txt\)"):
        bench.run_bench(root)
    assert (root / bundle.MANIFEST).read_bytes() == manifest  # not re-hashed into a "clean" manifest
    from export.core.locks import LOCK_NAME
    assert sorted(p.name for p in root.parent.iterdir()) == [LOCK_NAME, "demo-1"]  # no results written


@pytest.mark.unit
def test_bench_refuses_a_locked_dist(tmp_path):
    """While `make export` holds dist/'s lock (here: a process holding it), bench refuses in one line."""
    import subprocess
    import sys
    root = demo_bundle(tmp_path / "dist" / "demo-1")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom export.core.locks import exclusive_output\n"
         "with exclusive_output(sys.argv[1], command='resnet-deploy bundle'):\n"
         "    print('held', flush=True)\n    sys.stdin.read()\n", str(root.parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from export.core.locks import OutputBusy
        with pytest.raises(OutputBusy, match=r"dist is in use by pid \d+ .*\(resnet-deploy bundle, since "):
            bench.run_bench(root)
    finally:
        holder.communicate("", timeout=30)
    assert not root.with_name("demo-1.bench").exists()


def _row(key: str, p50: dict[str, float] | None, hint: str = "", skipped: str | None = None) -> dict:
    variant, rest = key.split("/")
    fmt, precision = rest.split("_")
    lat = {b: {"p50": v, "p90": v, "max": v, "mean": v, "min": v, "runs": 1, "images_per_s": int(b) * 1e3 / v}
           for b, v in (p50 or {}).items()}
    return {"key": key, "label": f"{key}@{hint}" if hint else key, "precision_hint": hint, "variant": variant,
            "format": fmt, "precision": precision, "path": key, "bytes": 1_000_000, "gflop_per_image": 7.7,
            "error": None, "skipped": skipped, "device": "CPU", "load_s": 0.1, "latency_ms": lat,
            "peak_rss_mb": 100.0, "rss_load_mb": 10.0, "top1": {"agree": 12, "total": 12, "agreement": 1.0},
            "load_1m": 0.0}


@pytest.mark.unit
def test_hint_rows_get_the_speedup_over_the_fastest_other_fp32_and_skips_render():
    """Synthetic rows (the numbers are made up): per batch, the baseline is the fastest fp32
    artifact of another format; a skipped bf16 row is derived from nothing and says why."""
    from export.bench.report import render_markdown
    rows = [_row("dense/savedmodel_fp32", {"1": 50.0, "8": 300.0}), _row("dense/onnx_fp32", {"1": 40.0, "8": 320.0}),
            _row("dense/onnx_int8", {"1": 20.0, "8": 100.0}),
            _row("dense/openvino_fp16", {"1": 35.0, "8": 280.0}, hint="f32"),
            _row("dense/openvino_fp16", None, hint="bf16", skipped="skipped: no bf16 hardware"),
            _row("dense/openvino_int8", {"1": 10.0, "8": 60.0}, hint="f32")]
    bench._derive(rows, ceiling=200.0)
    f32, bf16, int8 = rows[3], rows[4], rows[5]
    assert f32["pct_of_ceiling"] == pytest.approx(100 * (7.7 * 8e3 / 280) / 200, abs=0.01)
    # the int8 IR at the f32 hint: its rate is kept, but it is no % of the float32 matmul (its ceiling is the
    # int8 GEMM, from the paired rounds: recommend.apply_paired)
    assert int8["achieved_gflops"] == pytest.approx(7.7 * 8e3 / 60, abs=0.01) and int8["pct_of_ceiling"] is None
    assert f32["speedup_vs_fastest_fp32"] == {"baseline": {"1": "dense/onnx_fp32", "8": "dense/savedmodel_fp32"},
                                              "by_batch": {"1": round(40 / 35, 3), "8": round(300 / 280, 3)}}
    assert f32["speedup_vs_fp32"] is None and f32["achieved_gflops"] == pytest.approx(7.7 * 8e3 / 280, abs=0.01)
    assert rows[2]["speedup_vs_fp32"]["sibling"] == "dense/onnx_fp32"  # int8 still against its own fp32
    assert bf16["speedup_vs_fastest_fp32"] is None and bf16["achieved_gflops"] is None
    doc = {"bundle": "b-1", "created_at": "now", "artifacts": rows, "flops": {}, "export_timings": [],
           "environment": {"cpu_model": "CPU", "logical_cpus": 2, "load_average_start": [0.0],
                           "load_average_end": [0.0], "tool_versions": {}, "python": "3",
                           "cpu_features": {"AMX-BF16": False, "AVX512-BF16": False, "AVX512-VNNI": True}},
           "settings": {"threads": 2, "device": "CPU", "warmup": 1, "batch_sizes": [1, 8],
                        "runs": {"1": 1, "8": 1}, "isolation": "-", "latency": "-", "tensorflow_threads": "-"},
           "ceiling": {"gflops": 200.0, "threads": 2, "method": "-", "best": "-", "measurements": []}}
    md = render_markdown(doc)
    assert "CPU features detected: AMX-BF16 no, AVX512-BF16 no, AVX512-VNNI yes." in md
    assert "| `dense` openvino fp16 @ bf16 | 1.0 | **skipped: no bf16 hardware** |" in md
    assert "**1.14×** b1 vs onnx_fp32 / **1.07×** b8 vs savedmodel_fp32 |" in md
    assert "| top-1 vs fp32 | % of its ceiling (paired) | speed-up |" in md


@pytest.mark.unit
def test_layer_tables_hold_each_group_to_its_rows_ceiling_and_name_float_convolutions_in_int8():
    """Synthetic profiles (made-up numbers): a group's % is of its row's own precision's best GEMM, the
    int8 speed-up is the float row's time over the int8 row's, and an int8 IR's float convolution is named."""
    from export.bench.report import _layer_tables

    def profile(groups, floats=()):
        return {"batch": 1, "runs": 30, "wall_ms": 7.0, "nodes_ms": 6.5, "other_ms": 0.5, "threads": 2,
                "precision_hint": "f32", "float_convolutions": list(floats),
                "groups": [{"group": g, "layers": n, "ms": ms, "gop": gop, "gops": gop / ms * 1e3, "kernels": [k]}
                           for g, n, ms, gop, k in groups]}
    int8 = {"label": "conv/openvino_int8@f32", "variant": "conv", "precision": "int8", "precision_hint": "f32",
            "layer_profile": profile([("1x1 conv @7x7", 7, 1.0, 0.8, "brgconv_avx512_1x1_I8"),
                                      ("3x3 conv @7x7", 3, 0.5, 0.7, "brgconv_avx512_f32")],
                                     floats=["Conv_9 (brgconv_avx512_f32)"])}
    fp16 = {"label": "conv/openvino_fp16@f32", "variant": "conv", "precision": "fp16", "precision_hint": "f32",
            "layer_profile": profile([("1x1 conv @7x7", 7, 2.5, 0.8, "brgconv_avx512_1x1_f32"),
                                      ("3x3 conv @7x7", 3, 2.0, 0.7, "brgconv_avx512_f32")],
                                     floats=["Conv_1 (x)", "Conv_9 (x)"])}
    doc = {"artifacts": [fp16, {"label": "conv/onnx_fp32", "variant": "conv", "precision": "fp32"}, int8],
           "ceiling": {"measurements": [{"library": "numpy", "gflops": 400.0}],
                       "by_precision": [{"library": "onnxruntime", "precision": "int8", "gflops": 1600.0},
                                        {"library": "openvino", "precision": "int8", "gflops": 1000.0}]}}
    md = "\n".join(_layer_tables(doc))
    assert "| layer group | convs | conv/openvino_int8@f32 ms | GOP/s | % of int8 | conv/openvino_fp16@f32 ms | " \
           "GFLOP/s | % of fp32 | int8 speed-up |" in md  # the int8 row first, whatever the table's order
    assert "| 1x1 conv @7x7 | 7 | 1.00 | 800 | 50 | 2.50 | 320 | 80 | 2.50× |" in md
    assert "| 3x3 conv @7x7 | 3 | 0.50 | 1400 | 88 | 2.00 | 350 | 88 | 4.00× |" in md
    assert "- `conv/openvino_int8@f32`: 7.00 ms a run with the counters on; the nodes 6.50 ms, convolutions " \
           "6.00 ms, other nodes 0.50 ms. 1 convolution(s) ran a float kernel (Conv_9 (brgconv_avx512_f32))" in md
    assert "- `conv/openvino_fp16@f32`: 7.00 ms a run with the counters on; the nodes 6.50 ms, convolutions " \
           "6.00 ms, other nodes 0.50 ms. 2 convolution(s) ran a float kernel (`brgconv_avx512_1x1_f32`, " \
           "`brgconv_avx512_f32`)." in md
    assert _layer_tables({**doc, "artifacts": [doc["artifacts"][1]]}) == []  # nothing profiled: no section


@pytest.mark.unit
@pytest.mark.parametrize("text", ["", "1,x", "0", "1,-8", "eight"])
def test_bad_batch_sizes(text):
    with pytest.raises(UsageError, match=r"--batch-sizes expects comma-separated integers >= 1"):
        bench.parse_batch_sizes(text)
    assert bench.parse_batch_sizes("8, 1,8") == [1, 8]


@pytest.mark.e2e
def test_bad_bundle_and_variant_in_process(small_bundle, tmp_path):
    root, _, _, _ = small_bundle
    with pytest.raises(BundleError, match=r"is not a bundle: it has no manifest\.json"):
        bench.run_bench(tmp_path)
    with pytest.raises(UsageError, match=r"variant\(s\) \['nope'\] not in .*; it has \['dense'\]"):
        bench.run_bench(root, variants=["nope"])


@pytest.mark.e2e
@pytest.mark.parametrize("args,message", [
    (("{empty}",), "is not a bundle: it has no manifest.json"),
    (("{empty}/missing",), "is neither a bundle directory nor a .tar.gz"),
    (("{tar}",), "is a file: bench writes into a bundle directory"),
    (("{bundle}", "--batch-sizes", "1,x"), "--batch-sizes expects comma-separated integers >= 1"),
    (("{bundle}", "--warmup", "-1"), "argument --warmup: must be >= 0, got -1"),
    (("{bundle}", "--threads", "0"), "argument --threads: must be >= 1, got 0"),
])
def test_bad_input_is_a_one_line_error(small_bundle, tmp_path, args, message):
    root, _, _, _ = small_bundle
    paths = {"empty": tmp_path, "tar": root.with_name("bench-smoke-1.tar.gz"), "bundle": root}
    r = run_main("bench", *(a.format(**paths) for a in args))
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr
