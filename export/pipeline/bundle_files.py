"""The files of a bundle beside its artifacts, written once parity passed: the TF Serving configs,
the Kubernetes and KServe manifests, the README and, last, manifest.json."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from export.pipeline import gate as gate_bundle


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


def created_at() -> str:
    """Now, or SOURCE_DATE_EPOCH when set (reproducible builds), as ISO 8601 UTC."""
    from datetime import UTC, datetime

    from export.bundle.packing import source_date_epoch
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


def served_versions(variants: Iterable[str], artifacts: list, version: int) -> dict[str, list[int]]:
    """models.config's models: the variants (in config order) whose SavedModel is in the bundle. A
    variant whose SavedModel the accuracy gate dropped (on_accuracy_fail = "drop"), or that ships
    none, is not listed: TF Serving would fail to load a model without a version directory."""
    shipped = {a.variant for a in artifacts if a.format == "savedmodel"}
    return {v: [version] for v in variants if v in shipped}


def lay_out(root: Path, cfg, variants_meta, artifacts, report, timings, versions, created_at,
            dropped=()) -> None:
    """Write the TF Serving configs, the bundle README and, last, manifest.json."""
    from export.bundle.layout import write_manifest
    from export.bundle.readme import render_readme
    from export.core.atomic import write_text
    from export.deploy import tfserving as serving_config
    version = cfg["version"]
    write_text(root / "models.config",
               serving_config.bundle_models_config(served_versions(variants_meta, artifacts, version)))
    write_text(root / "batching.config", serving_config.batching_config())
    write_text(root / "monitoring.config", serving_config.monitoring_config())
    _write_deploy_manifests(root, f"{cfg['name']}-{version}", cfg["storage_uri"], versions.get("tensorflow"))
    write_text(root / "README.md", render_readme(f"{cfg['name']}-{version}", cfg["name"], version,
                                                 variants_meta, artifacts, report.to_markdown())
               + gate_bundle.readme_section(list(dropped)))
    from export.bundle import card, reproducibility, selfdoc
    from export.bundle.manifest import Manifest, ParitySummary, StageTiming, VariantRecord
    manifest = Manifest(
        name=cfg["name"], version=version, created_at=created_at, git=_git_commit(),
        tool_versions=versions, config=cfg["path"],
        variants={name: VariantRecord(**meta) for name, meta in variants_meta.items()},
        artifacts=list(artifacts),
        parity=ParitySummary(passed=bool(report), counts=report.counts(), failures=report.failures(),
                             environment=report.environment),
        export_timings=[StageTiming(**t) for t in timings],
        accuracy=gate_bundle.manifest_summary(report, list(dropped)), extra={"card": card.card_record(cfg)})
    selfdoc.write_all(root, manifest.to_dict())  # MODEL_CARD.md, bom.cdx.json, report.html: listed and signed too
    manifest.reproducibility = reproducibility.record(root)
    write_manifest(root, manifest)
