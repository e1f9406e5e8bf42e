"""`parity --files DIR`: every real path from the encoded file, against the bytes signature.

For each artifact of a bundle (or export directory), the reference is that artifact fed the pixels
the image contract's in-graph twin decodes (for the SavedModel: `predict_image_bytes` itself).
Paths: `serving_default` with client-decoded pixels (`predict --pixels`); the local server over
REST and gRPC with both signatures; every other artifact on contract pixels (the server's runner
backends); `classify` on each .tflite; MediaPipe's ImageClassifier on each .tflite, fed the file
(`mp.Image.create_from_file`) and fed the documented pre-resize; `score` (Beam) once per image contract,
format and input type (serving.tools.file_parity_beam).
The rows and the markdown are export.quality.file_parity's.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.images import ImageContract, ImageError, header, pil
from export.quality.file_parity import (
    MEDIAPIPE_PRE_ATOL,
    MEDIAPIPE_PRE_SOURCE,
    MEDIAPIPE_RAW_ATOL,
    MEDIAPIPE_RAW_SOURCE,
    QUANTIZED,
    FileParityReport,
    compare,
    row_tolerance,
)
from serving.tools import file_parity_beam

Probs = dict[str, np.ndarray]


def corpus_files(folder: Path) -> list[Path]:
    """The regular files directly in `folder`, sorted (bad ones included: each path must refuse them)."""
    from export.core.errors import UsageError
    if not folder.is_dir():
        raise UsageError(f"--files {folder} is not a directory; give a folder of image files")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise UsageError(f"--files {folder} holds no files")
    return files


def _variant_facts(bundle: Path, variant: str, artifacts: list) -> tuple[ImageContract, list[str] | None, bool]:
    """(contract, labels, has a manifest) of `variant`: from manifest.json when the folder is a bundle."""
    size = int(next(a for a in artifacts if a.variant == variant).inputs[0]["shape"][1])
    path = bundle / "manifest.json"
    if not path.is_file():
        return ImageContract(size), None, False
    from export.bundle.manifest import Manifest
    record = Manifest.from_dict(json.loads(path.read_text()), source=str(path)).variants[variant]
    contract = ImageContract.from_dict(record.image) if record.image else ImageContract(size)
    return contract, list(record.labels), True


#: The in-graph twin's pixels of a corpus for one contract, and its refusals: (file name -> pixels,
#: file name -> {path: message}). Every variant of one contract shares them (twin_pixels).
TwinPixels = tuple[dict[str, np.ndarray], dict[str, dict[str, str]]]


def twin_pixels(files_dir: str | Path, contract: dict[str, Any]) -> TwinPixels:
    """The in-graph twin's pixels of the corpus in `files_dir` for `contract` (ImageContract.to_dict),
    and its refusals: computed once per contract (a pool task whose result every variant part of that
    contract takes: file_parity_pool), not once per part (~8 CPU s for the compact corpus)."""
    bad: dict[str, dict[str, str]] = {}
    return _tf_pixels(corpus_files(Path(files_dir)), ImageContract.from_dict(contract), bad), bad


def variant_contracts(root: Path, index: list) -> dict[str, ImageContract]:
    """variant -> its image contract, for every variant of `index` (sorted by name)."""
    return {name: _variant_facts(root, name, [a for a in index if a.variant == name])[0]
            for name in sorted({a.variant for a in index})}


def _tf_pixels(files: list[Path], contract: ImageContract, bad: dict) -> dict[str, np.ndarray]:
    """file name -> the in-graph twin's pixels; refusals recorded in `bad` by their message."""
    import tensorflow as tf

    from export.images import tf_ops
    from serving.backends.servables import tf_error_message
    fn = tf.function(lambda d: tf_ops.decode(d, contract), input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    out = {}
    for f in files:
        try:
            out[f.name] = fn(tf.constant(f.read_bytes())).numpy()
        except tf.errors.InvalidArgumentError as e:
            bad.setdefault(f.name, {})["predict_image_bytes (in graph)"] = tf_error_message(e)
    return out


def _pil_pixels(files: list[Path], contract: ImageContract, bad: dict) -> dict[str, np.ndarray]:
    out = {}
    for f in files:
        try:
            out[f.name] = pil.decode_file(f, contract)
        except ImageError as e:
            bad.setdefault(f.name, {})["contract (PIL twin)"] = str(e)
    return out


class Answers:
    """One loaded model's answers by input tensor: a tensor bit-identical to one it already ran (the
    twins' pixels are, bit for bit) is not run again; its answer is reused, and counted, since a CPU
    runtime answers the same tensor the same way. `infer(feed) -> probabilities [classes]`."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray]) -> None:
        self._infer = infer
        self._seen: dict[tuple, np.ndarray] = {}

    def __call__(self, feeds: dict[str, np.ndarray]) -> tuple[Probs, int]:
        """file name -> probabilities for each feed, and how many were answered without running."""
        import hashlib
        out, reused = {}, 0
        for name, feed in feeds.items():
            key = (feed.dtype.str, feed.shape, hashlib.blake2b(feed.tobytes(), digest_size=16).digest())
            if key in self._seen:
                reused += 1
            else:
                self._seen[key] = np.asarray(self._infer(feed), np.float64)
            out[name] = self._seen[key]
        return out, reused


def _runner_answers(runner) -> tuple[Answers, np.dtype]:
    dtype = np.dtype(runner.inputs["image"].dtype)
    return Answers(lambda feed: runner.infer({"image": feed[None]})["probabilities"][0]), dtype


def _feeds(pixels: dict[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    return {name: px.astype(dtype) for name, px in pixels.items()}  # whole grey levels already: uint8 is exact


def _savedmodel_rows(variant, art, root, files, tf_px, pil_px, rows, progress) -> Probs:
    import tensorflow as tf
    sm = tf.saved_model.load(str(root / art.path))
    ref: Probs = {}
    for f in files:
        if f.name in tf_px:
            out = sm.signatures["predict_image_bytes"](image_bytes=tf.constant([f.read_bytes()]))
            ref[f.name] = out["probabilities"].numpy()[0]
    answers = Answers(lambda feed: sm.signatures["serving_default"](image=tf.constant(feed[None]))
                      ["probabilities"].numpy()[0])
    got, reused = answers(_feeds(pil_px, np.float32))
    names = [f.name for f in files]
    rows.append(compare(variant, "savedmodel fp32", "serving_default on client-decoded pixels (predict --pixels)",
                        names, ref, got, same_input=reused))
    # training keeps decoded images as uint8: the same whole grey levels, so the same tensor again
    stored, reused = answers({n: p.astype(np.uint8).astype(np.float32) for n, p in pil_px.items()})
    rows.append(compare(variant, "savedmodel fp32", "training / calibration / gate decode (contract, stored uint8)",
                        names, ref, stored, same_input=reused))
    progress(f"{variant}: savedmodel both signatures")
    return ref


def _runner_rows(variant, art, root, files, tf_px, pil_px, rows, bad, progress,
                 mediapipe: bool, threads) -> Probs:
    from export.runtimes import runner_for
    what = f"{art.format} {art.precision}"
    quantized = art.precision in QUANTIZED
    names = [f.name for f in files]
    with runner_for(art, root, device="CPU", num_threads=threads) as runner:
        answers, dtype = _runner_answers(runner)
        ref, _ = answers(_feeds(tf_px, dtype))
        uint8_input = dtype == np.uint8 or "image" in getattr(runner, "quantization", {}) or art.precision == "int8"
        got, reused = answers(_feeds(pil_px, dtype))
        rows.append(compare(variant, what, "runner on contract pixels (server backend, score handler)",
                            names, ref, got, **row_tolerance(uint8_input, quantized), same_input=reused))
    progress(f"{variant}: {what}")
    if art.format != "tflite":
        return ref
    rows.append(compare(variant, what, "classify (LiteRT)", names, ref, _classify(root / art.path, files, bad, set(pil_px)),
                        **row_tolerance(uint8_input, quantized)))
    if mediapipe:
        upright = [f.name for f in files if header.exif_orientation(f.read_bytes()) == 1]
        raw, pre = _mediapipe(root / art.path, files, pil_px, bad, set(upright))
        rows.append(compare(variant, what, "MediaPipe ImageClassifier, raw file (create_from_file)", upright, ref,
                            raw, tolerance=MEDIAPIPE_RAW_ATOL, source=MEDIAPIPE_RAW_SOURCE, gate=False))
        pre_tolerance = row_tolerance(True, quantized) if uint8_input or quantized else \
            {"tolerance": MEDIAPIPE_PRE_ATOL, "source": MEDIAPIPE_PRE_SOURCE}
        rows.append(compare(variant, what, "MediaPipe ImageClassifier, contract pre-resize (on-device README)",
                            names, ref, pre, **pre_tolerance))
        progress(f"{variant}: {what} MediaPipe")
    return ref


def _classify(model: Path, files: list[Path], bad: dict, decodable: set[str]) -> Probs:
    """`classify` (the command's function) on the files the contract decodes, in one call (one model
    load), and on each other file alone, to record its one-line refusal."""
    from export.core.errors import UsageError
    from serving.tools.classify import classify
    out: Probs = {}
    good = [f for f in files if f.name in decodable]
    if good:
        for f, pred in zip(good, classify(model, [str(f) for f in good], top_k=10**6)["predictions"], strict=True):
            probs = np.zeros(len(pred["top_k"]))
            for t in pred["top_k"]:
                probs[t["index"]] = t["probability"]
            out[f.name] = probs
    for f in (f for f in files if f.name not in decodable):
        try:
            classify(model, [str(f)], top_k=1)
        except UsageError as e:
            bad.setdefault(f.name, {})[f"classify {model.name}"] = str(e)
    return out


def mediapipe_image(image):
    """An mp.Image MediaPipe's classifier can take: SRGB. A 1-channel (GRAY8) or SRGBA image from
    create_from_file is converted (a GRAY8 image aborts the classifier's graph, and that classifier
    then fails on every later image)."""
    import mediapipe as mp
    if image.image_format == mp.ImageFormat.SRGB:
        return image
    view = np.asarray(image.numpy_view())
    if view.ndim == 2 or view.shape[-1] == 1:
        view = np.repeat(view.reshape(view.shape[0], view.shape[1], 1), 3, axis=2)
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(view[..., :3]).astype(np.uint8))


def pre_resize(path: str | Path, contract: ImageContract) -> np.ndarray:
    """What a phone app hands MediaPipe to match the server: the contract's pixels as uint8
    [size, size, 3] (whole grey levels, so exactly the server's; MediaPipe has nothing left to resize)."""
    return pil.decode_file(path, contract, np.uint8)


def _mediapipe(model: Path, files: list[Path], pil_px: dict[str, np.ndarray], bad: dict,
               classify: set[str] | None = None) -> tuple[Probs, Probs]:
    """(raw, pre): MediaPipe's probabilities fed each file as a phone app would (`create_from_file`:
    every file is opened, so each refusal is recorded in `bad`, but only those in `classify`, when
    given, are classified: the raw row compares upright files only, as MediaPipe ignores EXIF), and fed
    the contract's pixels `pil_px` (the on-device README's pre-resize)."""
    from export.deploy.tflite_metadata import mediapipe_tasks
    mp, vision, BaseOptions = mediapipe_tasks()  # without TensorFlow, which MediaPipe would import for nothing
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)))
    raw: Probs = {}
    pre: Probs = {}

    def probs(classifier, image) -> np.ndarray:
        result = classifier.classify(image)
        head = next(h for h in result.classifications if h.head_name == "probabilities")
        out = np.zeros(max(c.index for c in head.categories) + 1)
        for c in head.categories:
            out[c.index] = c.score
        return out

    with vision.ImageClassifier.create_from_options(options) as classifier:
        for f in files:
            try:
                image = mediapipe_image(mp.Image.create_from_file(str(f)))
            except (RuntimeError, ValueError) as e:
                bad.setdefault(f.name, {})[f"MediaPipe {model.name}"] = str(e).splitlines()[0] if str(e) else "refused"
                continue
            if classify is None or f.name in classify:
                raw[f.name] = probs(classifier, image)
        for name, px in pil_px.items():
            u8 = px.astype(np.uint8)  # whole grey levels already: exact
            pre[name] = probs(classifier, mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(u8)))
    return raw, pre


@dataclass
class VariantPart:
    """What one variant's paths give (everything but the server's rows, which need every variant's
    SavedModel reference and one server): picklable, so that variants can run in the export pool."""

    variant: str = ""
    rows: list = field(default_factory=list)
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    server_ref: Probs | None = None


def variant_part(bundle: str | Path, files_dir: str | Path, variant: str, *, beam: bool = True,
                 mediapipe: bool = True, threads: int | None = None,
                 progress: Callable[[str], None] | None = None, formats: tuple[str, ...] | None = None,
                 twin: TwinPixels | None = None, beam_owners: dict[str, str] | None = None) -> VariantPart:
    """Every path of one variant's artifacts (those of `formats`, or all) but the server's (a pool
    task: export.pipeline.workers). `twin`: twin_pixels of this variant's contract, when already
    computed. `beam_owners` (beam_owners' plan for this variant): Beam path -> the variant of its
    contract that scores it; without it, this variant scores every Beam path of its own."""
    from export.formats import read_index
    root, folder = Path(bundle), Path(files_dir)
    files = corpus_files(folder)
    say = progress or (lambda _what: None)
    every = [a for a in read_index(root) if a.variant == variant]
    artifacts = [a for a in every if formats is None or a.format in formats]
    part = VariantPart(variant)
    contract, labels, is_bundle = _variant_facts(root, variant, every)
    if twin is None:
        twin = twin_pixels(folder, contract.to_dict())
    tf_px = twin[0]  # only read: the variants of a contract share it
    for name, paths in twin[1].items():
        part.bad_files.setdefault(name, {}).update(paths)
    pil_px = _pil_pixels(files, contract, part.bad_files)
    refs: dict[str, Probs] = {}
    for art in artifacts:
        if art.format == "savedmodel":
            refs[art.key] = part.server_ref = _savedmodel_rows(variant, art, root, files, tf_px, pil_px, part.rows, say)
        else:
            refs[art.key] = _runner_rows(variant, art, root, files, tf_px, pil_px, part.rows, part.bad_files,
                                         say, mediapipe, threads)
    if beam and is_bundle and labels:
        file_parity_beam.beam_rows(part, root, folder, files, artifacts, refs, labels, beam_owners or {}, say)
    elif beam:
        part.skipped.append(f"{variant}: score needs a bundle (manifest.json), {root} has none")
    return part


def run(bundle: str | Path, files_dir: str | Path, variant: str | None = None, *, server: bool = True,
        beam: bool = True, mediapipe: bool = True, threads: int | None = None,
        progress: Callable[[str], None] | None = None, workers: int = 1) -> FileParityReport:
    """The end-to-end report for every variant (or `variant`) of `bundle` on the files in `files_dir`.

    With `workers` > 1 the variants' paths run as the export pool's tasks in fresh processes
    (serving.tools.file_parity_pool, one intra-op thread each per core); the report is the same."""
    from export.formats import read_index
    from serving.tools.file_parity_server import BackgroundQueries, StartedServer, rows_from
    root, folder = Path(bundle), Path(files_dir)
    files = corpus_files(folder)
    say = progress or (lambda _what: None)
    every = read_index(root)
    index = [a for a in every if variant is None or a.variant == variant]
    served = server and (root / "models.config").is_file() and any(a.format == "savedmodel" for a in index)
    started, queries = None, None
    if served:  # the server loads, and is queried, while the variants' paths run
        started = StartedServer(root)
        on_server = sorted({a.variant for a in index if a.format == "savedmodel"})
        # in a thread of this process, which the clients leave free of TensorFlow (make export's parent)
        queries = BackgroundQueries(started, files, lambda: client_pixels(root, on_server, files))
    try:
        contracts = variant_contracts(root, index)
        owners = file_parity_beam.beam_owners(index, contracts)
        if workers > 1:
            from serving.tools.file_parity_pool import parts_in_pool
            parts = parts_in_pool(root, folder, index, contracts, beam, mediapipe, workers, threads, say, owners)
        else:
            twins = {c: twin_pixels(folder, c.to_dict()) for c in set(contracts.values())}
            parts = [variant_part(root, folder, name, beam=beam, mediapipe=mediapipe, threads=threads,
                                  progress=say, twin=twins[contract], beam_owners=owners[name])
                     for name, contract in contracts.items()]
    except BaseException:
        if queries is not None:
            queries.abandon()
        raise
    report = FileParityReport(corpus=[f.name for f in files])
    server_refs: dict[str, Probs] = {}
    for part in parts:
        report.rows += part.rows
        for file, paths in part.bad_files.items():
            report.bad_files.setdefault(file, {}).update(paths)
        report.skipped += [s for s in part.skipped if s not in report.skipped]  # once per variant
        if part.server_ref is not None:
            server_refs[part.variant] = part.server_ref
    # the same order however the parts ran: by variant, artifact and path; refusals by file and path
    report.rows.sort(key=lambda r: (r.variant, r.artifact, r.path))
    report.bad_files = {file: dict(sorted(paths.items())) for file, paths in sorted(report.bad_files.items())}
    if queries is not None:
        answers = queries.result()
        report.rows += rows_from(answers, files, server_refs, report.bad_files, say)
    if server and started is None:
        report.skipped.append(f"server: {root} has no models.config (not a bundle) or no SavedModel")
    _relative_messages(report.bad_files, folder)
    return report


def client_pixels(root: Path, variants: list[str], files: list[Path]) -> dict[str, dict[str, np.ndarray]]:
    """variant -> file name -> the pixels a client decodes by the variant's contract (`predict --pixels`),
    for the server's pixel rows."""
    from export.formats import read_index
    every = read_index(root)
    return {v: _pil_pixels(files, _variant_facts(root, v, [a for a in every if a.variant == v])[0], {})
            for v in variants}


def _relative_messages(bad: dict[str, dict[str, str]], folder: Path) -> None:
    """Refusal messages name the file as the corpus does (`empty.png`, not `/tmp/<random>/empty.png`):
    the report of the same files is the same report, whichever folder held them (a bundle's
    file_parity.json is compared byte for byte between identical exports)."""
    prefixes = sorted({str(folder) + os.sep, str(folder.resolve()) + os.sep}, key=len, reverse=True)
    for paths in bad.values():
        for path, message in paths.items():
            for prefix in prefixes:
                message = message.replace(prefix, "")
            paths[path] = message
