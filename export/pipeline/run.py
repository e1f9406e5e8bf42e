"""`make export`: every variant of the config through the worker pool (export.pipeline.workers runs
export.pipeline.stages), then the bundle laid out, signed, published and packed.

Imports only export/ (the TF Serving files it writes come from export.deploy); never serving/.
The config schema is export.pipeline.config, single-variant export export.pipeline.single.
"""
from __future__ import annotations

import json
from pathlib import Path

from export.formats import Artifact, write_index
from export.pipeline import gate as gate_bundle
from export.pipeline.config import load_config
from export.pipeline.single import resolve_targets
from export.pipeline.stages import WORK_DIR

#: Expected peak RSS of each kind of export task, GiB: VmHWM measured on ResNet50 at 224 x 224 with
#: 1 thread (keras 2.8, TFLite 2.4, ONNX 3.3, OpenVINO 0.95 for the conv heads; OpenVINO with NNCF int8
#: set at 2.0, an estimate: NNCF holds the float and the quantized graph), plus a little
#: headroom. The pool runs two at once only while their sum fits the budget: never two ONNX
#: conversions (the TensorFlow grappler pass in tf2onnx is the peak), nor ONNX beside a Keras build.
TASK_MEMORY_GB = {"train": 3.0, "keras": 2.9, "tflite": 2.5, "onnx": 3.45, "openvino": 2.0}
#: The memory (GiB) all export processes together may use (`make export`'s target on a 24 GiB
#: machine shared with other work); EXPORT_MEMORY_GB overrides it.
DEFAULT_MEMORY_BUDGET_GB = 6.0
#: The formats converted from the SavedModel, one worker task each per variant.
CONVERTED = ("tflite", "onnx", "openvino")
#: The training tasks' keys: "<variant>:train", one per variant with `data` (see export_tasks).
TRAIN_SUFFIX = ":train"


def is_training(key: str) -> bool:
    return key.endswith(TRAIN_SUFFIX)


def _build_args(v: dict) -> dict:
    """build()'s keyword arguments for one [[variants]] entry (a training step replaces the weights)."""
    return {"weights": v["weights"], "num_classes": v.get("num_classes"), "labels": v.get("labels")}


def export_tasks(cfg: dict, staging: Path, targets: dict[str, list[tuple[str, str]]], threads: int,
                 batch_sizes: tuple[int, ...] = (1, 4), runs: str | Path = "runs") -> list:
    """The worker tasks of `make export`: per variant with `data`, a training task (run, or reused
    from `runs`), then per variant a Keras task (build, SavedModel, golden), then one task per
    converted format (TFLite, ONNX, OpenVINO) reading that SavedModel; each checks its parity.

    The training tasks run one after another, in config order: training holds the lock of `runs`
    (export.training.train), and the variants of one data set and backbone share the backbone's maps
    that the first of them caches (`share_maps` for a head that pools first; export.training.head_fit).
    The first takes every core when nothing else can start beside it (every variant has `data`); the
    others take `threads`, so that the variants already trained are exported beside them instead of
    waiting for the last head."""
    from export.pipeline.workers import Task
    from export.training.runs import maps_sharers
    tasks, converts = [], []
    trained = [v for v in cfg["variants"] if v.get("data")]
    alone = len(trained) == len(cfg["variants"])
    for i, (v, share_maps) in enumerate(zip(trained, maps_sharers(trained), strict=True)):
        tasks.append(Task(v["name"] + TRAIN_SUFFIX, "export.pipeline.stages:train_task",
                          {"variant": v, "runs": str(runs), "threads": threads, "alone": alone and i == 0,
                           "share_maps": share_maps},
                          after=(trained[i - 1]["name"] + TRAIN_SUFFIX,) if i else (),
                          memory_gb=TASK_MEMORY_GB["train"], label=f"{v['name']} train (or reuse its run)"))
    for v in cfg["variants"]:
        name = v["name"]
        ships_sm = ("savedmodel", "fp32") in targets[name]
        common = {"variant": name, "staging": str(staging), "version": cfg["version"],
                  "ships_savedmodel": ships_sm, "threads": threads, "batch_sizes": batch_sizes}
        card = {"version": cfg["version"], "name": f"{cfg['name']}-{name}", "author": cfg["author"],
                "license": cfg["license"], **({"description": v["description"]} if "description" in v else {})}
        keras_key = f"{name}:keras"
        gate = gate_bundle.variant_gate(cfg, v, runs) if "gate" in cfg else None
        tasks.append(Task(keras_key, "export.pipeline.stages:keras_task", {**common, "build_args": _build_args(v), "gate": gate},
                          inputs={"train": name + TRAIN_SUFFIX} if v.get("data") else {},
                          memory_gb=TASK_MEMORY_GB["keras"], label=f"{name} build, savedmodel, golden"))
        for fmt in CONVERTED:
            precisions = [p for f, p in targets[name] if f == fmt]
            options = {"tflite": {"card": card}, "openvino": {"version": cfg["version"]}}.get(fmt, {})
            if precisions:
                converts.append(Task(f"{name}:{fmt}", "export.pipeline.stages:convert_task",
                                     {**common, "fmt": fmt, "precisions": precisions, "options": options},
                                     inputs={"keras": keras_key}, memory_gb=TASK_MEMORY_GB[fmt],
                                     label=f"{name} {fmt} {', '.join(precisions)}"))
    return tasks + converts


def run_bundle(config_path: str | Path, out: str | Path = "dist", weights: str | None = None,
               quiet: bool = False, *, signer=None, wait: bool = False, workers: int | None = None,
               memory_budget_gb: float | None = None, runs: str | Path = "runs", file_parity=None) -> dict:
    """`make export`: build -> export -> golden -> parity for every variant, in parallel worker
    processes (export.pipeline.workers, export.pipeline.stages), then lay out, checksum, sign (with `signer`, an
    export.bundle.signing.SigningKey) and publish `<out>/<name>-<version>/` plus its .tar.gz and .sha256,
    and `<name>-<version>.export.json` (what the run cost: wall, CPU, peak memory).

    The bundle is staged in a hidden directory beside it and renamed into place only when
    complete and its parity passed; an interrupted run leaves the previous bundle untouched.
    A failed parity writes `<name>-<version>.parity-FAILED.{json,md}` instead of a bundle.
    The whole run holds `out`'s lock (a second run refuses, or waits with wait=True), and
    starts by removing what killed runs left there (export/core/locks.py). `file_parity`: the
    end-to-end check from files (export.pipeline.end_to_end.Hook), run on the laid-out bundle.
    """
    from export.core.locks import exclusive_output
    from export.model.variants import get_variant
    # A bad config is said before anything is created or locked.
    cfg = load_config(config_path, weights)
    for v in cfg["variants"]:
        get_variant(v["name"])  # an unknown variant fails before any process starts
    targets = {v["name"]: resolve_targets("all", v.get("precisions")) for v in cfg["variants"]}
    with exclusive_output(out, command=f"resnet-deploy bundle --config {config_path}", wait=wait):
        return _run_bundle(cfg, targets, out, quiet, signer, workers, memory_budget_gb, runs, file_parity)



def _run_bundle(cfg: dict, targets: dict, out: str | Path, quiet: bool, signer, workers: int | None,
                memory_budget_gb: float | None, runs: str | Path, file_parity=None) -> dict:
    import os
    import shutil
    import signal
    import tempfile
    import time

    from export.bundle.packing import pack
    from export.core.atomic import ensure_writable_dir, replace_dir
    from export.pipeline.bundle_files import created_at, lay_out
    from export.pipeline.progress import TaskProgress, timed_stage
    from export.pipeline.workers import default_workers, run_tasks, threads_per_task

    out = ensure_writable_dir(out)
    bundle_name = f"{cfg['name']}-{cfg['version']}"
    final = out / bundle_name
    # <out>/.<bundle>.<random>.partial/<bundle>/: the bundle is staged under its own name, so the
    # signature's subject (model-signing names it after the directory) is the bundle's name.
    scratch = Path(tempfile.mkdtemp(prefix=f".{bundle_name}.", suffix=".partial", dir=out))
    staging = scratch / bundle_name
    staging.mkdir()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    from export.pipeline.forkserver import cpu_seconds
    started, cpu0, load0 = time.perf_counter(), cpu_seconds(), os.getloadavg()
    workers = workers or default_workers()
    budget = memory_budget_gb or float(os.environ.get("EXPORT_MEMORY_GB", DEFAULT_MEMORY_BUDGET_GB))
    threads = threads_per_task(workers)
    try:
        with TaskProgress(quiet) as progress:
            tasks = export_tasks(cfg, staging, targets, threads, runs=runs)
            pool = run_tasks(tasks, workers=workers, memory_budget_gb=budget,
                             on_start=lambda t: progress.start(t.key, t.label),
                             on_done=lambda t, cost: progress.done(t.key, f"{t.label} ({cost.wall_s:.0f} s)"))
            shutil.rmtree(staging / WORK_DIR, ignore_errors=True)
            collected = _collect(cfg, pool, staging)
            report, artifacts, timings = collected["report"], collected["artifacts"], collected["timings"]
            run = _pool_record(pool, workers, threads, budget, load0)
            if not report:
                return _refuse(out, bundle_name, staging, report, timings, run)
            keras = collected["keras"]
            variants_meta = {name: keras[name]["meta"] for name in keras}
            from export.formats import tool_versions
            timed_stage(progress, timings, "bundle", "all      bundle (configs, README, manifest)", lay_out,
                        staging, cfg, variants_meta, artifacts, report, timings, tool_versions(), created_at(),
                        collected["dropped"])
            if file_parity is not None:
                from export.bundle import layout
                from export.pipeline import end_to_end
                if not timed_stage(progress, timings, "e2e", "all      end-to-end parity from files",
                                   end_to_end.check, staging, file_parity, layout):
                    return end_to_end.refuse(out, bundle_name, staging, timings, run)
            if signer is not None:
                timed_stage(progress, timings, "sign", "all      sign", signer.sign, staging)
            replace_dir(staging, final)
            tar_path, digest = timed_stage(progress, timings, "pack", "all      pack", pack, final)
        for stale in out.glob(f"{bundle_name}.parity-FAILED.*"):
            stale.unlink()
        wall = _finish_record(run, pool, started, cpu0, timings, bundle_name, collected["trained"])
        from export.core.atomic import write_text
        write_text(out / f"{bundle_name}{EXPORT_RUN_SUFFIX}", json.dumps(run, indent=2) + "\n")
        return {"published": True, "bundle": str(final), "tarball": str(tar_path), "sha256": digest,
                "artifacts": artifacts, "report": report, "timings": timings, "run": run,
                "seconds": round(wall, 1)}
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        shutil.rmtree(scratch, ignore_errors=True)


def _collect(cfg: dict, pool, staging: Path) -> dict:
    """Merge the worker tasks' results: one ParityReport (saved into `staging`), the artifacts in
    config order (less those the accuracy gate dropped), the stage timings and the training runs."""
    from dataclasses import asdict

    from export.core.atomic import write_text
    from export.quality import parity
    from export.quality.report import ParityReport
    order = {v["name"]: i for i, v in enumerate(cfg["variants"])}
    kinds = ("keras", *CONVERTED)
    train_results = [r for k, r in pool.results.items() if is_training(k)]
    runs = {name: run for r in train_results for name, run in r["runs"].items()}
    done = sorted((r for k, r in pool.results.items() if not is_training(k)),
                  key=lambda r: (order[r["variant"]], kinds.index(r["task"])))
    artifacts = [a for r in done for a in r["artifacts"]]
    keras = {r["variant"]: r for r in done if r["task"] == "keras"}
    timings = _sum_timings([*(t for r in train_results for t in r["timings"]), *(t for r in done for t in r["timings"])])
    report = ParityReport(environment=keras[cfg["variants"][0]["name"]]["environment"],
                          references=[keras[v["name"]]["reference"] for v in cfg["variants"]],
                          results=[x for r in done for x in r["results"]],
                          tolerances={k: asdict(t) for k, t in parity.TOLERANCES.items()},
                          accuracy=gate_bundle.sections(cfg, done))
    dropped: list[dict] = []
    if cfg.get("gate", {}).get("on_fail") == "drop":
        artifacts, dropped = gate_bundle.drop_failed(report, artifacts, staging)
    quantization = gate_bundle.quantization_records(done)
    if quantization:
        from export.quality.repair_onnx import quantization_markdown
        write_text(staging / "quantization.md", quantization_markdown(quantization))
    report.save(staging)
    write_index(staging, [Artifact.from_dict({**a.to_dict(), "path": str(staging / a.path)})
                          for a in artifacts])
    return {"report": report, "artifacts": artifacts, "keras": keras, "timings": timings, "dropped": dropped,
            "trained": {v["name"]: runs[v["name"]] for v in cfg["variants"] if v["name"] in runs}}


def _pool_record(pool, workers: int, threads: int, budget: float, load0) -> dict:
    """What the worker pool cost: the start of `<bundle>.export.json`."""
    import os
    from dataclasses import asdict
    return {"workers": workers, "threads_per_task": threads, "memory_budget_gb": budget,
            "pool": {"wall_s": pool.wall_s, "cpu_s": pool.cpu_s, "peak_total_rss_mb": pool.peak_total_rss_mb,
                     "peak_total_pss_mb": pool.peak_total_pss_mb, "rss_at_peak_mb": pool.rss_at_peak,
                     "tasks": {k: asdict(c) for k, c in pool.costs.items()}},
            "load_average_start": [round(x, 2) for x in load0], "cpu_count": os.cpu_count()}


def _refuse(out: Path, bundle_name: str, staging: Path, report, timings: list[dict], run: dict) -> dict:
    """A failed parity: `<bundle>.parity-FAILED.{json,md}` beside where the bundle would be, no bundle."""
    import shutil
    failed = out / f"{bundle_name}.parity-FAILED"
    shutil.copyfile(staging / "parity.json", f"{failed}.json")
    shutil.copyfile(staging / "parity.md", f"{failed}.md")
    return {"published": False, "bundle": None, "report": f"{failed}.md",
            "failures": report.failures(), "timings": timings, "run": run}


def _finish_record(run: dict, pool, started: float, cpu0: float, timings: list[dict], bundle_name: str,
                   trained: dict) -> float:
    """Complete the run record with the export's own wall and CPU time; returns the wall seconds.
    The CPU is this process's and every task's and subprocess's it ran: the pool's tasks, and the
    end-to-end parity's own pool (before, only the first pool's tasks were counted, and the ratio
    left out the end-to-end stage's ~250 CPU s)."""
    import os
    import time

    from export.pipeline.bundle_files import created_at
    from export.pipeline.forkserver import cpu_seconds
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu0
    # Training is reported apart: the export's own wall starts when its first task does (before it,
    # only training ran), and its CPU is the run's less the training tasks'. Training's wall runs
    # from the start to the end of its last task, so where the two overlap both count that time.
    trains = [c for k, c in pool.costs.items() if is_training(k)]
    others = [c.started_s for k, c in pool.costs.items() if not is_training(k)]
    train_wall = max((c.started_s + c.wall_s for c in trains), default=0.0)
    export_start = min(others, default=train_wall) if trains else 0.0  # no training: the pool's start
    wall, cpu = wall - export_start, cpu - sum(c.cpu_s for c in trains)
    run.update({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cpu_per_wall": round(cpu / wall, 2),
                "peak_total_rss_mb": pool.peak_total_rss_mb, "peak_total_pss_mb": pool.peak_total_pss_mb,
                "stages": timings, "load_average_end": [round(x, 2) for x in os.getloadavg()],
                "excluded": "training (timed separately; the export's time starts with its first task)",
                "bundle": bundle_name,
                "training": {"wall_s": round(train_wall, 1), "cpu_s": round(sum(c.cpu_s for c in trains), 1),
                             "beside_export_s": round(max(0.0, train_wall - export_start), 1),
                             "runs": {name: r["summary"] for name, r in trained.items()}},
                "measured_at": created_at()})
    return wall


def _sum_timings(timings) -> list[dict]:
    """One entry per (variant, stage), seconds summed over the tasks that ran that stage."""
    total: dict[tuple[str, str], float] = {}
    for t in timings:
        key = (t["variant"], t["stage"])
        total[key] = total.get(key, 0.0) + t["seconds"]
    return [{"variant": v, "stage": s, "seconds": round(x, 2)} for (v, s), x in total.items()]


#: `<out>/<name>-<version>.export.json`: what the last `make export` of that bundle cost (written
#: after the tarball, so it is not inside it); `make bench` reads it for the export targets.
EXPORT_RUN_SUFFIX = ".export.json"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
