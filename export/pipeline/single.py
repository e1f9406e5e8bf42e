"""One variant to the chosen formats (`resnet-deploy export`): the targets, the destination check and
the exporters in dependency order (SavedModel first; TFLite, ONNX, OpenVINO converted from it)."""
from __future__ import annotations

from pathlib import Path

from export.core.errors import UsageError
from export.core.registry import FORMATS
from export.formats import Artifact, write_index


def resolve_targets(fmt: str = "all", precisions: list[str] | None = None) -> list[tuple[str, str]]:
    """(format, precision) pairs for `--format` and `--precision`; UsageError on unknown names."""
    formats = tuple(FORMATS) if fmt == "all" else (fmt,)
    if fmt != "all" and fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}, all")
    known = sorted({p for f in formats for p in FORMATS[f].precisions})
    for p in precisions or []:
        if p not in known:
            raise UsageError(f"unknown precision {p!r} for --format {fmt}; choose from: {', '.join(known)}")
    return [(f, p) for f in formats for p in FORMATS[f].precisions
            if (p in precisions if precisions else fmt != "all" or p not in FORMATS[f].opt_in)]


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
            savedmodel.write_saved_model(built.model, sm_dir, built.input_size, built.spec.aspect)
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
                                            overwrite=overwrite,
                                            **((calibration or {}) if precision == "int8" else {})))
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


