"""The orchestration of `resnet-deploy export` and `make export`: build -> export -> parity -> bundle.

With cli.py, the only module that knows every stage (it may import serving/ for the warmup).
"""
from __future__ import annotations

from pathlib import Path

from export.errors import UsageError
from export.formats import PRECISIONS, Artifact, write_index

FORMATS = tuple(PRECISIONS)


def resolve_targets(fmt: str = "all", precisions: list[str] | None = None) -> list[tuple[str, str]]:
    """(format, precision) pairs for `--format` and `--precision`; UsageError on unknown names."""
    formats = FORMATS if fmt == "all" else (fmt,)
    if fmt != "all" and fmt not in PRECISIONS:
        raise UsageError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}, all")
    known = sorted({p for f in formats for p in PRECISIONS[f]})
    for p in precisions or []:
        if p not in known:
            raise UsageError(f"unknown precision {p!r} for --format {fmt}; choose from: {', '.join(known)}")
    return [(f, p) for f in formats for p in PRECISIONS[f] if not precisions or p in precisions]


def export_artifacts(built, out_dir: str | Path, targets: list[tuple[str, str]], *, version: int = 1,
                     opset: int = 17, overwrite: bool = False, progress=None) -> list[Artifact]:
    """Export `built` to every (format, precision) in `targets`, in dependency order.

    TFLite and ONNX are converted from the SavedModel's serving_default, so a SavedModel is
    always written first (kept when asked for, else in a scratch dir removed afterwards);
    ONNX int8 quantizes the fp32 ONNX when that is exported too. Writes artifacts.json.
    """
    import shutil
    import tempfile

    from export.atomic import ensure_writable_dir
    from export.formats import onnx, savedmodel, tflite
    from serving.warmup import write_warmup_requests

    out = ensure_writable_dir(out_dir)
    # Refuse before any work if something would be overwritten.
    if not overwrite:
        _refuse_existing(out, built.spec.name, targets, version)
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
            scratch = Path(tempfile.mkdtemp(prefix=".savedmodel.", dir=out))
            sm_dir = scratch / "sm"
            savedmodel.write_saved_model(built.model, sm_dir, built.input_size)
        for fmt, precision in targets:
            if fmt == "tflite":
                note(built.spec.name, fmt, precision)
                done.append(tflite.export(built, out, precision, saved_model_dir=sm_dir, overwrite=overwrite))
        fp32_onnx = None
        for fmt, precision in sorted((t for t in targets if t[0] == "onnx"), key=lambda t: t[1] != "fp32"):
            note(built.spec.name, fmt, precision)
            art = onnx.export(built, out, precision, saved_model_dir=sm_dir, opset=opset,
                              overwrite=overwrite, fp32_path=fp32_onnx)
            fp32_onnx = Path(art.path) if precision == "fp32" else fp32_onnx
            done.append(art)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if done:
            write_index(out, done)
    return done


def _refuse_existing(out: Path, variant: str, targets, version: int) -> None:
    from export.errors import ExportError
    paths = {("savedmodel", "fp32"): out / "tfserving" / variant / str(version),
             ("onnx", "fp32"): out / "onnx" / variant / "model.onnx",
             ("onnx", "int8"): out / "onnx" / variant / "model_int8.onnx"}
    for fmt, precision in targets:
        p = paths.get((fmt, precision), out / "tflite" / variant / f"model_{precision}.tflite")
        if p.exists():
            what = "version directory" if fmt == "savedmodel" else "file"
            raise ExportError(f"{what} {p} already exists; pass --overwrite to replace it "
                              "(or --version N for a new SavedModel version)")
