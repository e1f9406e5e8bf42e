"""SavedModel in TF Serving's layout: `<out>/tfserving/<variant>/<version>/`.

Two signatures: `serving_default` (`image` float32 [N,H,W,3] -> `logits`, `probabilities`)
and `predict_image_bytes` (`image_bytes`: encoded JPEG/PNG strings, decoded and resized in
the graph), so REST clients can send `{"b64": ...}`. The version directory is written beside
its final place and renamed when complete: TF Serving's poller never sees half a version.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from export.core.atomic import staged_dir
from export.formats import Artifact, sha256_path, tool_versions

#: Hook that writes extra files into the staged version dir (e.g. TF Serving warmup requests).
AssetsWriter = Callable[[Path, Any], object]


def signatures_for(model, size: int, aspect: str = "stretch"):
    """The two serving functions of `model` as tf.functions with fixed input signatures; the
    bytes signature decodes by the image contract's in-graph twin (export.images.tf_ops)."""
    import tensorflow as tf

    from export.images import ImageContract, tf_ops
    contract = ImageContract(size, aspect)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="image")], autograph=False)
    def serving_default(image):
        return model(image, training=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False)
    def predict_image_bytes(image_bytes):
        # a call of serving_default, not a second trace of the model: ResNet50's graph is stored once
        return serving_default(tf_ops.decode_batch(image_bytes, contract))

    return serving_default, predict_image_bytes


def _ordered_archive(model):
    """A keras ExportArchive that saves the endpoints' variables in the model's own order.

    Keras lists them in the order the traced functions captured them, which changes from run
    to run; the checkpoint (variables.*), saved_model.pb and the ONNX converted from them then
    differ between two exports of the same weights. The model's order makes them byte-identical.
    """
    import keras

    rank = {id(getattr(v, "value", v)): i for i, v in enumerate(model.variables)}

    base = type(keras.export.ExportArchive())  # its __new__ returns the backend's archive class

    class OrderedExportArchive(base):
        def _filter_and_track_resources(self):
            super()._filter_and_track_resources()
            found = list(self._tf_trackable._all_variables)
            self._tf_trackable._all_variables = sorted(found, key=lambda v: (rank.get(id(v), len(rank)), v.name))

    return OrderedExportArchive()


def write_saved_model(model, path: Path, size: int, aspect: str = "stretch") -> None:
    """Write `model` with both signatures to `path` (an empty or new directory).

    Only the signatures are saved, not the endpoints as restorable tf.functions too: ExportArchive's
    write_out saves both, and tf.saved_model.save traces each endpoint again for the object graph, so
    the function library held every function twice (ResNet50's graph four times, with the bytes
    signature's own trace of the model). TF Serving, TFLite, tf2onnx, OpenVINO and
    `tf.saved_model.load(...).signatures` read the signatures. Measured on conv: load 1.95 -> 1.25 s,
    write 6.8 -> 3.4 s, saved_model.pb 3.5 -> 1.7 MB, the same outputs bit for bit."""
    import tensorflow as tf
    serving_default, predict_image_bytes = signatures_for(model, size, aspect)
    # No archive.track(model): the endpoints' variables are tracked anyway, and tracking the
    # model too stores every weight twice (Keras 3.15 keeps both the KerasVariables and the
    # tf.Variables they wrap), doubling the SavedModel to ~190 MB.
    archive = _ordered_archive(model)
    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("predict_image_bytes", predict_image_bytes)
    archive._filter_and_track_resources()  # the variables, in the model's order (_ordered_archive)
    root = archive._tf_trackable
    signatures = {"serving_default": serving_default.get_concrete_function(),
                  "predict_image_bytes": predict_image_bytes.get_concrete_function()}
    for name in signatures:
        delattr(root, name)  # the endpoints as restorable functions: not saved
    tf.saved_model.save(root, str(path), signatures=signatures)


def target_path(out_dir: str | Path, variant: str, precision: str = "fp32", version: int = 1) -> Path:
    """Where `export` writes: the version directory `<out_dir>/tfserving/<variant>/<version>`."""
    return Path(out_dir) / "tfserving" / variant / str(version)


def export(built, out_dir: str | Path, precision: str = "fp32", *, version: int = 1,
           overwrite: bool = False, assets_writer: AssetsWriter | None = None) -> Artifact:
    """Export `built` (a BuiltModel) to `<out_dir>/tfserving/<variant>/<version>/`."""
    from export.core.errors import UsageError
    if precision != "fp32":
        raise UsageError(f"savedmodel has precision fp32 only, got {precision!r}")
    if not isinstance(version, int) or version < 1:
        raise UsageError(f"version must be an integer >= 1, got {version!r}")
    start = time.perf_counter()
    final = target_path(out_dir, built.spec.name, precision, version)
    with staged_dir(final, overwrite=overwrite) as tmp:
        write_saved_model(built.model, tmp, built.input_size, built.spec.aspect)
        if assets_writer is not None:
            assets_writer(tmp, built)
    digest, size = sha256_path(final)
    shape = [None, built.input_size, built.input_size, 3]
    outputs = [{"name": n, "dtype": "float32", "shape": [None, built.num_classes]}
               for n in ("logits", "probabilities")]
    return Artifact(
        path=str(final), format="savedmodel", precision="fp32", variant=built.spec.name,
        sha256=digest, bytes=size,
        inputs=[{"name": "image", "dtype": "float32", "shape": shape}],
        outputs=outputs, tool_versions=tool_versions(), seconds=round(time.perf_counter() - start, 3),
        details={"version": version, "signatures": ["serving_default", "predict_image_bytes"],
                 "image_bytes_input": {"name": "image_bytes", "dtype": "string", "shape": [None]},
                 "image_contract": built.spec.image_contract(built.input_size).to_dict(),
                 "warmup": (final / "assets.extra" / "tf_serving_warmup_requests").exists()},
    )
