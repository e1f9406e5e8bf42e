"""The orchestration of `resnet-deploy export` and `make export`: build -> export -> parity -> bundle.

Imports only export/ (the TF Serving files it writes come from export.deploy); never serving/.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from export.core.errors import UsageError
from export.core.registry import FORMATS
from export.formats import Artifact, write_index
from export.pipeline import gate as gate_bundle
from export.pipeline.stages import WORK_DIR
from export.training.settings import check_training_keys


def resolve_targets(fmt: str = "all", precisions: list[str] | None = None) -> list[tuple[str, str]]:
    """(format, precision) pairs for `--format` and `--precision`; UsageError on unknown names."""
    formats = tuple(FORMATS) if fmt == "all" else (fmt,)
    if fmt != "all" and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}, all")
    known = sorted({p for f in formats for p in FORMATS[f].precisions})
    for p in precisions or []:
        if p not in known:
            raise UsageError(f"unknown precision {p!r} for --format {fmt}; choose from: {', '.join(known)}")
    return [(f, p) for f in formats for p in FORMATS[f].precisions if not precisions or p in precisions]


def export_artifacts(built, out_dir: str | Path, targets: list[tuple[str, str]], *, version: int = 1,
                     opset: int = 17, overwrite: bool = False, progress=None,
                     card: dict | None = None, wait: bool = False, lock: bool = True,
                     calibration: dict | None = None) -> list[Artifact]:
    """Export `built` to every (format, precision) in `targets`, in dependency order; `card`
    overrides the TFLite metadata's name/version/author/license/description; `calibration`
    ({"calibration": images, "calibration_record": ...}) is what int8 is calibrated on.

    TFLite, ONNX and OpenVINO are converted from the SavedModel's serving_default, so a
    SavedModel is always written first (kept when asked for, else in a scratch dir removed
    afterwards); ONNX int8 quantizes the fp32 ONNX when that is exported too. Writes artifacts.json.
    Holds `out_dir`'s lock (export/core/locks.py) unless lock=False (a private staging directory).
    """
    from export.core.locks import exclusive_output
    if not lock:
        return _export_artifacts(built, out_dir, targets, version, opset, overwrite, progress, card, calibration)
    with exclusive_output(out_dir, command=f"resnet-deploy export {built.spec.name}", wait=wait):
        return _export_artifacts(built, out_dir, targets, version, opset, overwrite, progress, card, calibration)


def _export_artifacts(built, out_dir, targets, version, opset, overwrite, progress, card,
                      calibration=None) -> list[Artifact]:
    import shutil
    import tempfile

    from export.deploy.warmup import write_warmup_requests
    from export.formats import onnx, openvino, savedmodel, tflite

    out = check_destination(out_dir, built.spec.name, targets, version=version, overwrite=overwrite)
    note = progress or (lambda *_: None)
    done: list[Artifact] = []
    scratch = None
    try:
        if ("savedmodel", "fp32") in targets:
            note(built.spec.name, "savedmodel", "fp32")
            sm = savedmodel.export(built, out, version=version, overwrite=overwrite,
                                   assets_writer=write_warmup_requests)
            done.append(sm)
            sm_dir = Path(sm.path)
        else:
            scratch = Path(tempfile.mkdtemp(prefix=".savedmodel.", suffix=".partial", dir=out))
            sm_dir = scratch / "sm"
            savedmodel.write_saved_model(built.model, sm_dir, built.input_size)
        for fmt, precision in targets:
            if fmt == "tflite":
                note(built.spec.name, fmt, precision)
                done.append(tflite.export(built, out, precision, saved_model_dir=sm_dir, overwrite=overwrite,
                                          card={"version": version, **(card or {})},
                                          **((calibration or {}) if precision == "int8" else {})))
        fp32_onnx = None
        for fmt, precision in sorted((t for t in targets if t[0] == "onnx"), key=lambda t: t[1] != "fp32"):
            note(built.spec.name, fmt, precision)
            art = onnx.export(built, out, precision, saved_model_dir=sm_dir, opset=opset,
                              overwrite=overwrite, fp32_path=fp32_onnx,
                              **((calibration or {}) if precision == "int8" else {}))
            fp32_onnx = Path(art.path) if precision == "fp32" else fp32_onnx
            done.append(art)
        for fmt, precision in targets:
            if fmt == "openvino":
                note(built.spec.name, fmt, precision)
                done.append(openvino.export(built, out, precision, saved_model_dir=sm_dir, version=version,
                                            overwrite=overwrite))
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if done:
            write_index(out, done)
    return done


def check_destination(out_dir: str | Path, variant: str, targets: list[tuple[str, str]], *, version: int = 1,
                      overwrite: bool = False) -> Path:
    """Create `out_dir` if needed and check, before any model is built, that it can be written and
    that no artifact would be overwritten without `overwrite` (ExportError naming the path)."""
    from export.core.atomic import ensure_writable_dir
    out = ensure_writable_dir(out_dir)
    if not overwrite:
        _refuse_existing(out, variant, targets, version)
    return out


def _refuse_existing(out: Path, variant: str, targets, version: int) -> None:
    from export.core.errors import ExportError
    for fmt, precision in targets:
        p = FORMATS[fmt].target_path(out, variant, precision, version)
        if p.exists():
            what = "directory" if FORMATS[fmt].suffix is None else "file"
            raise ExportError(f"{what} {p} already exists; pass --overwrite to replace it "
                              "(or --version N for a new SavedModel / OpenVINO version)")


# -- make export: the bundle pipeline -----------------------------------------------------------

_VARIANT_KEYS = {"name", "num_classes", "labels", "weights", "precisions", "description", "data", "train",
                 *gate_bundle.VARIANT_KEYS}
_TOP_KEYS = {"name", "version", "weights", "variants", "author", "license", "storage_uri", *gate_bundle.TOP_KEYS}
#: Free-text keys (TFLite metadata) and their defaults.
_TEXT_KEYS = {"author": "resnet-deploy", "license": "unspecified"}


def load_config(path: str | Path, weights_override: str | None = None) -> dict:
    """Read and validate the bundle config (TOML); UsageError naming the file and key."""
    import re
    import tomllib
    path = Path(path)
    try:
        cfg = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    unknown = set(cfg) - _TOP_KEYS
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    name = cfg.get("name", "resnet50-heads")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"{path}: name {name!r} must be letters, digits, '.', '_' or '-'")
    version = cfg.get("version", 1)
    if not isinstance(version, int) or version < 1:
        raise UsageError(f"{path}: version must be an integer >= 1, got {version!r}")
    text = {k: cfg.get(k, default) for k, default in _TEXT_KEYS.items()}
    for key, value in [*text.items(), *((f"description of {v.get('name', '?')!r}", v["description"])
                                        for v in cfg.get("variants") or [] if "description" in v)]:
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{path}: {key} must be a non-empty string, got {value!r}")
    variants = cfg.get("variants") or []
    if not variants:
        raise UsageError(f"{path}: no [[variants]] listed")
    seen = set()
    for v in variants:
        bad = set(v) - _VARIANT_KEYS
        if bad:
            raise UsageError(f"{path}: variant {v.get('name', '?')!r} has unknown key(s) {sorted(bad)}; "
                             f"allowed: {sorted(_VARIANT_KEYS)}")
        if "name" not in v:
            raise UsageError(f"{path}: every [[variants]] entry needs a name")
        if v["name"] in seen:
            raise UsageError(f"{path}: variant {v['name']!r} is listed twice")
        seen.add(v["name"])
        v["weights"] = weights_override or v.get("weights") or cfg.get("weights", "random:0")
        check_training_keys(v, f"{path}: variant {v['name']!r}")
    from export.deploy.fetch import PLACEHOLDER_STORAGE_URI, parse_storage_uri
    storage_uri = cfg.get("storage_uri", PLACEHOLDER_STORAGE_URI)
    if not isinstance(storage_uri, str):
        raise UsageError(f"{path}: storage_uri must be a string such as 'gs://BUCKET/models', got {storage_uri!r}")
    parse_storage_uri(storage_uri, what=f"{path}: storage_uri")
    return {"name": name, "version": version, "variants": variants, "path": str(path), **text,
            "storage_uri": storage_uri, "gate": gate_bundle.check_config(cfg, path)}


def _git_commit() -> dict[str, object]:
    import subprocess
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {"commit": commit or "unknown", "dirty": dirty}


#: Expected peak RSS of each kind of export task, GiB: VmHWM measured on ResNet50 at 224 x 224 with
#: 1 thread (keras 2.8, TFLite 2.4, ONNX 3.3, OpenVINO 0.95 for the conv heads), plus a little
#: headroom. The pool runs two at once only while their sum fits the budget: never two ONNX
#: conversions (the TensorFlow grappler pass in tf2onnx is the peak), nor ONNX beside a Keras build.
TASK_MEMORY_GB = {"train": 3.0, "keras": 2.9, "tflite": 2.5, "onnx": 3.45, "openvino": 1.1}
#: The memory (GiB) all export processes together may use (`make export`'s target on a 24 GiB
#: machine shared with other work); EXPORT_MEMORY_GB overrides it.
DEFAULT_MEMORY_BUDGET_GB = 6.0
#: The formats converted from the SavedModel, one worker task each per variant.
CONVERTED = ("tflite", "onnx", "openvino")
#: The key of the one training task (see export_tasks).
TRAIN_TASK = "all:train"


def _build_args(v: dict) -> dict:
    """build()'s keyword arguments for one [[variants]] entry (a training step replaces the weights)."""
    return {"weights": v["weights"], "num_classes": v.get("num_classes"), "labels": v.get("labels")}


def export_tasks(cfg: dict, staging: Path, targets: dict[str, list[tuple[str, str]]], threads: int,
                 batch_sizes: tuple[int, ...] = (1, 4), runs: str | Path = "runs") -> list:
    """The worker tasks of `make export`: one training task for the variants with `data` (run or
    reused from `runs`), then per variant a Keras task (build, SavedModel, golden), then one task
    per converted format (TFLite, ONNX, OpenVINO) reading that SavedModel; each checks its parity.

    Training is one task, not one per variant: the variants share the frozen backbone, so the
    first computes the cached backbone features and the others train their heads on them."""
    from export.pipeline.workers import Task
    tasks, converts = [], []
    trained = [v for v in cfg["variants"] if v.get("data")]
    if trained:
        tasks.append(Task(TRAIN_TASK, "export.pipeline.stages:train_task", {"variants": trained, "runs": str(runs),
                          "threads": threads}, memory_gb=TASK_MEMORY_GB["train"],
                          label=f"train {', '.join(v['name'] for v in trained)} (or reuse runs)"))
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
                          inputs={"train": TRAIN_TASK} if v.get("data") else {},
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


class _TaskProgress:
    """A rich display of the worker tasks: a line per task from its start, its time when done."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console
        self.console = Console(stderr=True, quiet=quiet)
        self._progress: Any = None
        self._ids: dict[str, Any] = {}

    def __enter__(self):
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=self.console, transient=False)
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        self._progress.__exit__(*exc)

    def start(self, key: str, label: str) -> None:
        self._ids[key] = self._progress.add_task(label, total=1)

    def done(self, key: str, label: str) -> None:
        self._progress.update(self._ids[key], completed=1, description=f"{label} [green]done")

    def run(self, key: str, label: str, fn, *args, **kwargs):
        self.start(key, label)
        result = fn(*args, **kwargs)
        self.done(key, label)
        return result


def run_bundle(config_path: str | Path, out: str | Path = "dist", weights: str | None = None,
               quiet: bool = False, *, signer=None, wait: bool = False, workers: int | None = None,
               memory_budget_gb: float | None = None, runs: str | Path = "runs") -> dict:
    """`make export`: build -> export -> golden -> parity for every variant, in parallel worker
    processes (export.pipeline.workers, export.pipeline.stages), then lay out, checksum, sign (with `signer`, an
    export.bundle.signing.SigningKey) and publish `<out>/<name>-<version>/` plus its .tar.gz and .sha256,
    and `<name>-<version>.export.json` (what the run cost: wall, CPU, peak memory).

    The bundle is staged in a hidden directory beside it and renamed into place only when
    complete and its parity passed; an interrupted run leaves the previous bundle untouched.
    A failed parity writes `<name>-<version>.parity-FAILED.{json,md}` instead of a bundle.
    The whole run holds `out`'s lock (a second run refuses, or waits with wait=True), and
    starts by removing what killed runs left there (export/core/locks.py).
    """
    from export.core.locks import exclusive_output
    from export.model.variants import get_variant
    # A bad config is said before anything is created or locked.
    cfg = load_config(config_path, weights)
    for v in cfg["variants"]:
        get_variant(v["name"])  # an unknown variant fails before any process starts
    targets = {v["name"]: resolve_targets("all", v.get("precisions")) for v in cfg["variants"]}
    with exclusive_output(out, command=f"resnet-deploy bundle --config {config_path}", wait=wait):
        return _run_bundle(cfg, targets, out, quiet, signer, workers, memory_budget_gb, runs)


def _run_bundle(cfg: dict, targets: dict, out: str | Path, quiet: bool, signer, workers: int | None,
                memory_budget_gb: float | None, runs: str | Path) -> dict:
    import json
    import os
    import shutil
    import signal
    import tempfile
    import time
    from dataclasses import asdict

    from export.bundle import layout as bundle_mod
    from export.core.atomic import ensure_writable_dir, replace_dir, write_text
    from export.deploy import tfserving as serving_config
    from export.formats import tool_versions
    from export.pipeline.workers import default_workers, run_tasks, threads_per_task
    from export.quality import parity
    from export.quality.report import ParityReport

    out = ensure_writable_dir(out)
    bundle_name = f"{cfg['name']}-{cfg['version']}"
    final = out / bundle_name
    # <out>/.<bundle>.<random>.partial/<bundle>/: the bundle is staged under its own name, so the
    # signature's subject (model-signing names it after the directory) is the bundle's name.
    scratch = Path(tempfile.mkdtemp(prefix=f".{bundle_name}.", suffix=".partial", dir=out))
    staging = scratch / bundle_name
    staging.mkdir()
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
    started, cpu0, load0 = time.perf_counter(), os.times(), os.getloadavg()
    workers = workers or default_workers()
    budget = memory_budget_gb or float(os.environ.get("EXPORT_MEMORY_GB", DEFAULT_MEMORY_BUDGET_GB))
    threads = threads_per_task(workers)
    try:
        with _TaskProgress(quiet) as progress:
            tasks = export_tasks(cfg, staging, targets, threads, runs=runs)
            pool = run_tasks(tasks, workers=workers, memory_budget_gb=budget,
                             on_start=lambda t: progress.start(t.key, t.label),
                             on_done=lambda t, cost: progress.done(t.key, f"{t.label} ({cost.wall_s:.0f} s)"))
            shutil.rmtree(staging / WORK_DIR, ignore_errors=True)
            order = {v["name"]: i for i, v in enumerate(cfg["variants"])}
            kinds = ("keras", *CONVERTED)
            train_result = pool.results.get(TRAIN_TASK, {})
            trained = train_result.get("runs", {})
            done = sorted((r for k, r in pool.results.items() if k != TRAIN_TASK),
                          key=lambda r: (order[r["variant"]], kinds.index(r["task"])))
            artifacts = [a for r in done for a in r["artifacts"]]
            keras = {r["variant"]: r for r in done if r["task"] == "keras"}
            timings = _sum_timings([*train_result.get("timings", []), *(t for r in done for t in r["timings"])])
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
            run = {"workers": workers, "threads_per_task": threads, "memory_budget_gb": budget,
                   "pool": {"wall_s": pool.wall_s, "cpu_s": pool.cpu_s, "peak_total_rss_mb": pool.peak_total_rss_mb,
                            "peak_total_pss_mb": pool.peak_total_pss_mb, "rss_at_peak_mb": pool.rss_at_peak,
                            "tasks": {k: asdict(c) for k, c in pool.costs.items()}},
                   "load_average_start": [round(x, 2) for x in load0], "cpu_count": os.cpu_count()}
            if not report:
                failed = out / f"{bundle_name}.parity-FAILED"
                shutil.copyfile(staging / "parity.json", f"{failed}.json")
                shutil.copyfile(staging / "parity.md", f"{failed}.md")
                return {"published": False, "bundle": None, "report": f"{failed}.md",
                        "failures": report.failures(), "timings": timings, "run": run}
            variants_meta = {name: keras[name]["meta"] for name in keras}
            _stage(progress, timings, "bundle", "all      bundle (configs, README, manifest)", _lay_out, staging, cfg,
                   variants_meta, artifacts, report, serving_config, bundle_mod, timings, tool_versions(),
                   _created_at(), dropped)
            if signer is not None:
                _stage(progress, timings, "sign", "all      sign", signer.sign, staging)
            replace_dir(staging, final)
            tar_path, digest = _stage(progress, timings, "pack", "all      pack", bundle_mod.pack, final)
        for stale in out.glob(f"{bundle_name}.parity-FAILED.*"):
            stale.unlink()
        cpu1 = os.times()
        wall = time.perf_counter() - started
        cpu = pool.cpu_s + (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
        # Training runs alone (every Keras task waits for it), so the export's own cost is the
        # run's less the training task's; training is reported apart.
        train_cost = pool.costs.get(TRAIN_TASK)
        if train_cost is not None:
            wall, cpu = wall - train_cost.wall_s, cpu - train_cost.cpu_s
        run.update({"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cpu_per_wall": round(cpu / wall, 2),
                    "peak_total_rss_mb": pool.peak_total_rss_mb, "peak_total_pss_mb": pool.peak_total_pss_mb,
                    "stages": timings, "load_average_end": [round(x, 2) for x in os.getloadavg()],
                    "excluded": "training (timed separately)", "bundle": bundle_name,
                    "training": {"wall_s": round(train_cost.wall_s, 1) if train_cost else 0.0,
                                 "runs": {name: r["summary"] for name, r in trained.items()}},
                    "measured_at": _created_at()})
        write_text(out / f"{bundle_name}{EXPORT_RUN_SUFFIX}", json.dumps(run, indent=2) + "\n")
        return {"published": True, "bundle": str(final), "tarball": str(tar_path), "sha256": digest,
                "artifacts": artifacts, "report": report, "timings": timings, "run": run,
                "seconds": round(wall, 1)}
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        shutil.rmtree(scratch, ignore_errors=True)


def _stage(progress, timings: list[dict], stage: str, label: str, fn, *args):
    """Run one whole-bundle step in this process, shown and timed like the worker tasks."""
    import time
    start = time.perf_counter()
    result = progress.run(stage, label, fn, *args)
    timings.append({"variant": "all", "stage": stage, "seconds": round(time.perf_counter() - start, 2)})
    return result


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


def _created_at() -> str:
    """Now, or SOURCE_DATE_EPOCH when set (reproducible builds), as ISO 8601 UTC."""
    from datetime import UTC, datetime

    from export.bundle.layout import source_date_epoch
    epoch = source_date_epoch()
    when = datetime.now(UTC) if epoch is None else datetime.fromtimestamp(epoch, UTC)
    return when.isoformat(timespec="seconds")


def _write_deploy_manifests(root: Path, bundle_name: str, storage_uri: str, tensorflow_version: str | None) -> None:
    """deploy/kubernetes/ and deploy/kserve/ for the config's storage_uri (a marked placeholder
    unless set; `resnet-deploy k8s` re-renders them for the real one, with the tarball's digest)."""
    from dataclasses import replace

    from export.deploy import kubernetes
    from export.deploy.fetch import PLACEHOLDER_STORAGE_URI
    info = replace(kubernetes.BundleInfo.from_dir(root), name=bundle_name, tensorflow_version=tensorflow_version)
    files = kubernetes.render(info, storage_uri, placeholder=storage_uri == PLACEHOLDER_STORAGE_URI)
    kubernetes.write(root / "deploy", files)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _lay_out(root: Path, cfg, variants_meta, artifacts, report, serving_config, bundle_mod, timings,
             versions, created_at, dropped=()) -> None:
    """Write the TF Serving configs, the bundle README and, last, manifest.json."""
    from export.core.atomic import write_text
    version = cfg["version"]
    write_text(root / "models.config",
               serving_config.bundle_models_config({v: [version] for v in variants_meta}))
    write_text(root / "batching.config", serving_config.batching_config())
    write_text(root / "monitoring.config", serving_config.monitoring_config())
    _write_deploy_manifests(root, f"{cfg['name']}-{version}", cfg["storage_uri"], versions.get("tensorflow"))
    write_text(root / "README.md", bundle_mod.render_readme(f"{cfg['name']}-{version}", cfg["name"], version,
                                                            variants_meta, artifacts, report.to_markdown())
               + gate_bundle.readme_section(list(dropped)))
    from export.bundle import reproducibility
    from export.bundle.manifest import Manifest, ParitySummary, StageTiming, VariantRecord
    bundle_mod.write_manifest(root, Manifest(
        name=cfg["name"], version=version, created_at=created_at, git=_git_commit(),
        tool_versions=versions, config=cfg["path"],
        variants={name: VariantRecord(**meta) for name, meta in variants_meta.items()},
        artifacts=list(artifacts),
        parity=ParitySummary(passed=bool(report), counts=report.counts(), failures=report.failures(),
                             environment=report.environment),
        export_timings=[StageTiming(**t) for t in timings],
        reproducibility=reproducibility.record(root),
        accuracy=gate_bundle.manifest_summary(report, list(dropped)),
    ))
