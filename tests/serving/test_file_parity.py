"""`parity --files DIR`: a corpus of encoded files (every kind, EXIF orientations, bad files)
through every real path of a tiny real bundle, compared with `predict_image_bytes`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export.quality.file_parity import FileParityReport, compare, render_markdown
from tests.helpers import run_main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_scoring_bundle):
    from export.images import corpus
    root = tmp_path_factory.mktemp("file-parity")
    corpus.write(root / "files", large=False, bad=True)
    return tiny_scoring_bundle, root / "files"


def _rows(report: FileParityReport) -> dict[tuple[str, str], object]:
    return {(r.artifact, r.path): r for r in report.rows}


BAD = {"text.jpg": "not a JPEG, PNG, GIF, BMP or WebP file", "empty.png": "not a JPEG, PNG, GIF, BMP or WebP file",
       "truncated.jpg": "corrupt or truncated JPEG data"}


@pytest.mark.integration
def test_every_in_process_path_answers_like_the_bytes_signature(tiny):
    from serving.tools.file_parity import run
    bundle, files = tiny
    report = run(bundle, files, server=False, beam=False)
    rows = _rows(report)
    assert ("savedmodel fp32", "serving_default on client-decoded pixels (predict --pixels)") in rows
    for art in ("tflite fp32", "tflite int8"):
        for path in ("classify (LiteRT)", "runner on contract pixels (server backend, score handler)",
                     "MediaPipe ImageClassifier, contract pre-resize (on-device README)"):
            row = rows[(art, path)]
            assert row.passed and row.files == len(report.corpus) - len(BAD), (art, path, row.failures)
            assert row.max_prob_diff <= 0.01 and row.top1_agreement == 1.0
        raw = rows[(art, "MediaPipe ImageClassifier, raw file (create_from_file)")]
        assert not raw.gate  # measured and shown: MediaPipe's own resize is not the contract
        # the twins' pixels are bit-identical, so the runner answered the reference's tensors once
        runner = rows[(art, "runner on contract pixels (server backend, score handler)")]
        assert runner.same_input == runner.files == len(report.corpus) - len(BAD)
        assert rows[(art, "classify (LiteRT)")].same_input == 0  # its own process path, run for real
    stored = rows[("savedmodel fp32", "training / calibration / gate decode (contract, stored uint8)")]
    assert stored.same_input == stored.files == len(report.corpus) - len(BAD)
    assert rows[("onnx fp32", "runner on contract pixels (server backend, score handler)")].passed
    assert report, [r.failures for r in report.rows if not r.passed]
    for name, message in BAD.items():
        said = report.bad_files[name]
        assert said["contract (PIL twin)"].endswith(f"{name}: {message}")
        assert said["classify model_fp32.tflite"].endswith(f"{name}: {message}")
    assert "not a JPEG, PNG, GIF, BMP or WebP file" in report.bad_files["text.jpg"]["predict_image_bytes (in graph)"]
    assert "Invalid JPEG data" in report.bad_files["truncated.jpg"]["predict_image_bytes (in graph)"]
    assert FileParityReport.from_dict(json.loads(json.dumps(report.to_dict()))).to_dict() == report.to_dict()
    assert "## End-to-end parity from the file" in render_markdown(report)


@pytest.mark.integration
def test_mediapipe_opens_every_file_but_classifies_only_those_its_raw_row_compares(tiny):
    """The raw-file row compares upright files only (MediaPipe ignores EXIF), so the EXIF-rotated ones
    are not classified; every file is still opened, so each bad file's refusal is recorded."""
    from export.formats import read_index
    from export.images import ImageContract, header
    from serving.tools.file_parity import _mediapipe, _pil_pixels, corpus_files
    bundle, files = tiny
    model = next(a for a in read_index(bundle) if a.format == "tflite" and a.precision == "fp32")
    names = corpus_files(files)
    upright = {f.name for f in names if header.exif_orientation(f.read_bytes()) == 1}
    rotated = {f.name for f in names} - upright
    assert len(rotated) == 7 and not rotated & set(BAD)  # the full corpus: orientations 2-8 of one photo
    pixels = _pil_pixels(names[:2], ImageContract(int(model.inputs[0]["shape"][1])), {})
    key = f"MediaPipe {Path(model.path).name}"
    bad: dict = {}
    raw, pre = _mediapipe(Path(bundle) / model.path, names, pixels, bad, upright)
    refused = {name for name, paths in bad.items() if key in paths}
    assert {"text.jpg", "empty.png"} <= refused  # opened, and refused, though not classified either way
    assert set(raw) == upright - refused and set(pre) == set(pixels)
    every_bad: dict = {}
    everything, _ = _mediapipe(Path(bundle) / model.path, names, pixels, every_bad)
    assert set(everything) == {f.name for f in names} - refused
    assert {name for name, paths in every_bad.items() if key in paths} == refused
    assert all((everything[n] == raw[n]).all() for n in raw)


@pytest.mark.integration
def test_variants_in_the_export_pool_give_the_same_report(tiny):
    """make export runs each variant's paths in a pool process (workers > 1): the same rows, refusals
    and skips as in-process, and refusals name the file as the corpus does, not its folder."""
    from serving.tools.file_parity import run
    bundle, files = tiny
    serial = run(bundle, files, server=False, beam=False, mediapipe=False, threads=1)
    pooled = run(bundle, files, server=False, beam=False, mediapipe=False, threads=1, workers=2)
    assert pooled.to_dict() == serial.to_dict()
    assert not [m for paths in pooled.bad_files.values() for m in paths.values() if str(files) in m]
    assert pooled.bad_files["text.jpg"]["contract (PIL twin)"] == "cannot decode image text.jpg: " + BAD["text.jpg"]


@pytest.mark.unit
def test_a_one_variant_bundle_makes_two_pool_tasks():
    """`make export`'s hook gives the pool as many workers as there are tasks, up to the cores: one
    variant's LiteRT part and its other runtimes' part run at once, on both cores."""
    from types import SimpleNamespace as A

    from serving.tools.file_parity_pool import pool_tasks
    one = [A(variant="dense", format=f) for f in ("savedmodel", "tflite", "tflite", "onnx", "openvino")]
    assert pool_tasks(one) == 2
    assert pool_tasks([*one, *(A(variant="conv", format=f) for f in ("savedmodel", "onnx"))]) == 3
    assert pool_tasks([A(variant="dense", format="tflite"), A(variant="dense", format="tensorrt")]) == 2


@pytest.mark.unit
def test_the_in_graph_twin_runs_once_per_contract_in_the_pool(tmp_path):
    """The twin's pixels (~8 CPU s a corpus) are one pool task per image contract, whose result every
    part of the variants of that contract takes; a variant of another size gets its own."""
    from types import SimpleNamespace as A

    from serving.tools.file_parity import variant_contracts
    from serving.tools.file_parity_pool import pool_plan

    def arts(variant, size):
        return [A(variant=variant, format=f, inputs=[{"shape": [1, size, size, 3]}]) for f in ("savedmodel", "tflite")]

    def plan(index):
        return pool_plan(tmp_path, tmp_path / "files", index, variant_contracts(tmp_path, index), beam=False,
                         mediapipe=False, threads=1)
    twins, parts = plan([*arts("dense", 224), *arts("conv", 224)])
    assert len(twins) == 1 and twins[0].kwargs["contract"]["size"] == 224
    assert len(parts) == 4 and all(p.inputs == {"twin": twins[0].key} for p in parts)
    twins, parts = plan([*arts("dense", 224), *arts("small", 160)])
    assert sorted(t.kwargs["contract"]["size"] for t in twins) == [160, 224]
    assert {p.kwargs["variant"]: p.inputs["twin"] for p in parts} == {
        "dense": next(t.key for t in twins if t.kwargs["contract"]["size"] == 224),
        "small": next(t.key for t in twins if t.kwargs["contract"]["size"] == 160)}


@pytest.mark.unit
def test_answers_run_each_distinct_tensor_once():
    """A tensor bit-identical to one already run is answered from it, and counted; any other runs."""
    import numpy as np

    from serving.tools.file_parity import Answers
    ran = []
    answers = Answers(lambda feed: (ran.append(feed.copy()), np.array([feed.sum(), 1.0]))[1])
    a, b = np.zeros((2, 2, 3), np.float32), np.ones((2, 2, 3), np.float32)
    first, reused = answers({"a.png": a, "b.png": b, "a.bmp": a.copy()})
    assert reused == 1 and len(ran) == 2 and first["a.bmp"] is first["a.png"]
    again, reused = answers({"a.png": a.copy(), "b.png": b + np.float32(1e-6), "c.png": a.astype(np.uint8)})
    assert reused == 1 and len(ran) == 4  # one ulp off runs again; so does the same values in another dtype
    assert again["b.png"][0] == float(np.sum(b + np.float32(1e-6))) and first["b.png"][0] == 12.0


@pytest.mark.integration
def test_a_flip_or_a_refusal_fails_the_row():
    import numpy as np
    ref = {"a": np.array([0.6, 0.4]), "b": np.array([0.5, 0.5]), "c": np.array([0.1, 0.9])}
    row = compare("v", "tflite fp32", "p", ["a", "b", "c"], ref, {"a": np.array([0.4, 0.6]), "b": ref["b"]})
    assert not row.passed and row.refused == ["c"] and row.worst_file == "a"
    assert row.failures == ["largest probability difference 0.2 > 0.01 (a)", "top-1 differs on a", "refused c"]
    assert compare("v", "x", "p", ["a"], ref, {"a": ref["a"] + 0.005}).passed


@pytest.mark.integration
def test_parity_files_cli_writes_the_report(tiny, tmp_path):
    bundle, files = tiny
    r = run_main("parity", "--artifacts", str(bundle), "--files", str(files), "--no-server", "--no-score",
                 "--no-mediapipe", "--variant", "tiny", "--report", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    assert "## End-to-end parity from the file" in (tmp_path / "rep" / "file_parity.md").read_text()
    doc = json.loads((tmp_path / "rep" / "file_parity.json").read_text())
    assert doc["passed"] and doc["format_version"] == 1 and len(doc["corpus"]) == len(list(Path(files).iterdir()))
    r = run_main("parity", "--artifacts", str(bundle), "--files", str(tmp_path / "none"))
    assert r.returncode == 2 and "--files" in r.stderr and "is not a directory" in r.stderr


#: `make export`'s end-to-end parity (workers > 1) in a process of its own: the report, and whether
#: that process imported TensorFlow.
POOLED = """
import json, sys
from serving.tools.file_parity import run
report = run(sys.argv[1], sys.argv[2], beam=False, mediapipe=False, threads=1, workers=2)
print(json.dumps({"report": report.to_dict(), "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.mark.e2e
def test_pooled_server_queries_answer_alike_and_leave_the_caller_free_of_tensorflow(tiny):
    """With workers > 1 (make export) the variants' paths run in pool tasks and the server's REST and
    gRPC queries in a thread of the caller: the report is the in-process one, and the calling process
    (make export's parent) never imports TensorFlow (~670 MB), not even for the gRPC client's protos."""
    import subprocess
    import sys

    from serving.tools.file_parity import run
    from tests.helpers import ROOT
    bundle, files = tiny
    serial = run(bundle, files, beam=False, mediapipe=False, threads=1)
    r = subprocess.run([sys.executable, "-c", POOLED, str(bundle), str(files)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    pooled = json.loads(r.stdout.strip().splitlines()[-1])
    assert pooled["tensorflow"] is False
    assert pooled["report"] == serial.to_dict()
    assert {row["path"] for row in pooled["report"]["rows"]} >= {"server REST predict_image_bytes",
                                                                 "server gRPC serving_default (client pixels)"}


@pytest.mark.integration
def test_a_variant_leaves_the_beam_paths_another_variant_of_its_contract_scores(tiny):
    """With beam_owners' plan, a variant scores only its own Beam paths; each path given to another
    variant is recorded as skipped, naming that variant, and has no score row here."""
    from serving.tools.file_parity import variant_part
    bundle, files = tiny
    part = variant_part(bundle, files, "tiny", mediapipe=False, formats=("tflite",),
                        beam_owners={"tflite:float32": "other", "tflite:uint8": "tiny"})
    scored = {r.artifact for r in part.rows if r.path == "score (Apache Beam, DirectRunner)"}
    assert scored == {"tflite int8"}
    (said,) = [s for s in part.skipped if s.startswith("tiny: score (Beam) of tflite fp32")]
    assert "(tflite, float32 input) is the one other tflite fp32 took" in said, said


@pytest.mark.e2e
def test_server_and_score_answer_like_the_bytes_signature(tiny):
    """The local server (REST and gRPC, both signatures) and Beam `score` of every format; bad
    files come back as HTTP 400 / INVALID_ARGUMENT and as dead-letter rows, each by its message."""
    from serving.tools.file_parity import run
    bundle, files = tiny
    report = run(bundle, files, mediapipe=False)
    rows = _rows(report)
    for api in ("REST", "gRPC"):
        for sig in ("predict_image_bytes", "serving_default (client pixels)"):
            row = rows[("savedmodel fp32", f"server {api} {sig}")]
            assert row.passed and row.files == len(report.corpus) - len(BAD), row.failures
    for art in ("savedmodel fp32", "tflite fp32", "tflite int8", "onnx fp32", "openvino fp16"):
        assert rows[(art, "score (Apache Beam, DirectRunner)")].passed
    assert report, [r.failures for r in report.rows if not r.passed]
    for name, message in BAD.items():
        said = report.bad_files[name]
        assert said["score tflite fp32"] == message
        assert ": HTTP 400: " in said["server REST predict_image_bytes"]
        assert said["server gRPC predict_image_bytes"].startswith("gRPC INVALID_ARGUMENT: ")
    for name in ("text.jpg", "empty.png"):  # refused from the header, before batching
        assert report.bad_files[name]["server REST predict_image_bytes"].endswith(f"HTTP 400: image 0: {BAD[name]}")
    truncated = report.bad_files["truncated.jpg"]  # refused by the graph's JPEG decoder, in its words
    assert truncated["server REST predict_image_bytes"].endswith("HTTP 400: jpeg::Uncompress failed. Invalid JPEG data "
                                                                 "or crop window.")


@pytest.mark.integration
def test_make_export_writes_the_section_into_the_bundle(tmp_path, tiny_scoring_bundle):
    """export.pipeline.end_to_end on a laid-out bundle: the section lands in parity.md and the README,
    file_parity.json beside them, the summary in the manifest, whose file table still verifies."""
    from export.bundle import layout
    from export.pipeline import end_to_end
    from serving.tools.file_parity import run
    bundle = Path(shutil.copytree(tiny_scoring_bundle, tmp_path / tiny_scoring_bundle.name))  # it changes it
    (bundle / "parity.md").write_text("# Parity\n")
    (bundle / "README.md").write_text("# tiny\n")
    layout.write_manifest(bundle, layout.read_manifest(bundle))
    seen = []

    def hook(root: Path, files: Path):
        seen.append(sorted(p.name for p in files.iterdir()))
        return run(root, files, variant="tiny", server=False, beam=False, mediapipe=False)

    assert end_to_end.check(bundle, hook, layout)
    assert "coffee_3000.jpg" in seen[0] and "chelsea_exif6.jpg" in seen[0] and "truncated.jpg" in seen[0]
    # the compact corpus: every kind and size once, the rotations phones write, the bad files
    assert len(seen[0]) == 23 + 3 and not {"chelsea_exif2.jpg", "astronaut_native.jpg"} & set(seen[0])
    assert {f"chelsea_exif{o}.jpg" for o in (1, 3, 6, 8)} <= set(seen[0])
    for name in ("parity.md", "README.md"):
        text = (bundle / name).read_text()
        assert text.startswith("# ") and "## End-to-end parity from the file" in text
    record = layout.read_manifest(bundle).extra["end_to_end_parity"]
    assert record["passed"] and record["files"] == len(seen[0]) and record["failures"] == []
    assert record["max_prob_diff_by_path"]["classify (LiteRT)"] <= 0.01
    assert layout.check_files(bundle, layout.read_manifest(bundle))
    assert json.loads((bundle / "file_parity.json").read_text())["passed"]


@pytest.mark.integration
def test_gate_eval_set_through_the_bytes_signature(tiny, tmp_path):
    """The accuracy gate's eval files through `predict_image_bytes` agree with the reference on the
    contract-decoded (stored uint8) pixels the gate judges."""
    import shutil

    import numpy as np
    import tensorflow as tf

    from export.pipeline.gate_stage import bytes_path_check
    from export.training import labeled_sets
    from tests.serving.scoring_bundle import LABELS
    bundle, files = tiny
    photos = sorted(p for p in Path(files).iterdir() if p.name.startswith(("chelsea", "astronaut", "coffee")))
    for i, label in enumerate(LABELS):
        (tmp_path / label).mkdir()
        shutil.copy(photos[i % len(photos)], tmp_path / label / photos[i % len(photos)].name)
    evalset = labeled_sets.eval_set(tmp_path, 32, LABELS)
    sm_dir = bundle / "tfserving" / "tiny" / "1"
    logits = tf.saved_model.load(str(sm_dir)).signatures["serving_default"](
        image=tf.constant(evalset.images.astype(np.float32)))["logits"].numpy()
    check = bytes_path_check(sm_dir, evalset, logits)
    assert check["images"] == len(LABELS) and check["top1_agreement"] == 1.0 and check["flips"] == []
    assert check["max_prob_diff"] < 1e-4  # stored uint8 pixels are the graph's whole grey levels (measured 0.0)


@pytest.mark.e2e
def test_predict_refuses_bad_files_with_one_line_and_exit_2(tiny, tmp_path):
    """`predict` on a truncated JPEG and a text file named .jpg: exit 2 and one line, whether the
    server decodes (bytes, HTTP 400) or the client does (--pixels)."""
    from serving.tools.file_parity_server import start_local_server, stop_local_server
    bundle, files = tiny
    proc, rest_port, grpc_port, _ = start_local_server(bundle)
    try:
        for name, server_says, client_says in (
                ("text.jpg", "HTTP 400: image 0: not a JPEG, PNG, GIF, BMP or WebP file",
                 "text.jpg: not a JPEG, PNG, GIF, BMP or WebP file"),
                ("truncated.jpg", "HTTP 400: jpeg::Uncompress failed. Invalid JPEG data or crop window.",
                 "truncated.jpg: corrupt or truncated JPEG data")):
            path = str(Path(files) / name)
            for where, extra, says in ((["--rest", f"http://127.0.0.1:{rest_port}"], [], server_says),
                                       (["--grpc", f"127.0.0.1:{grpc_port}"], ["--pixels"], client_says)):
                r = run_main("predict", *where, "--model", "tiny", *extra, path)
                err = r.stderr.strip().splitlines()
                assert r.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), (name, where, err)
                assert err[0].endswith(says), (name, err)
    finally:
        stop_local_server(proc)


def _index_art(variant: str, fmt: str, precision: str, dtype: str = "float32", size: int = 224):
    from export.formats import Artifact
    return Artifact(path=f"{variant}/{fmt}/{precision}", format=fmt, precision=precision, variant=variant, sha256="0",
                    bytes=1, inputs=[{"name": "image", "dtype": dtype, "shape": [None, size, size, 3]}],
                    outputs=[], tool_versions={}, seconds=0.0, details={})


@pytest.mark.unit
def test_beam_scores_one_artifact_per_format_and_input_type():
    """`score` runs Beam once per format and input dtype (fp32, OpenVINO's fp16, and TFLite int8's uint8
    input); the other precisions take the same Beam path, and their runner rows check their runtime."""
    from serving.tools.file_parity_beam import beam_artifacts

    def art(fmt: str, precision: str, dtype: str = "float32"):
        return _index_art("dense", fmt, precision, dtype)
    # in the bundle index's order: TFLite's precisions alphabetically, so the first is not its fp32
    every = [art("savedmodel", "fp32"), art("tflite", "dynamic"), art("tflite", "fp16"), art("tflite", "fp32"),
             art("tflite", "int8", "uint8"), art("onnx", "fp32"), art("onnx", "int8"), art("openvino", "fp16"),
             art("openvino", "int8")]
    scored, same = beam_artifacts(every)
    assert [(a.format, a.precision) for a in scored] == [("savedmodel", "fp32"), ("tflite", "fp32"), ("tflite", "int8"),
                                                         ("onnx", "fp32"), ("openvino", "fp16")]
    assert [(a.format, a.precision) for a in same] == [("tflite", "dynamic"), ("tflite", "fp16"), ("onnx", "int8"),
                                                       ("openvino", "int8")]


@pytest.mark.unit
def test_beam_scores_each_path_once_per_image_contract_spread_over_its_variants():
    """Across variants of one image contract, each Beam path (format and input dtype) is scored by one
    variant, the paths handed out in turn so that every variant scores some; a variant of another
    contract scores its own paths; a variant alone (`parity --files --variant`) scores all of its own."""
    from export.images import ImageContract
    from serving.tools.file_parity_beam import beam_owners
    full = [("savedmodel", "fp32"), ("tflite", "fp32"), ("tflite", "int8", "uint8"), ("tflite", "fp16"),
            ("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp16"), ("openvino", "int8")]
    index = [_index_art(v, *a) for v in ("dense", "conv", "dropout") for a in full]
    index += [_index_art("small", *a, size=96) for a in full[:3]]
    contracts = {"conv": ImageContract(224), "dense": ImageContract(224), "dropout": ImageContract(224),
                 "small": ImageContract(96)}
    owners = beam_owners(index, contracts)
    paths = ["savedmodel:float32", "tflite:float32", "tflite:uint8", "onnx:float32", "openvino:float32"]
    assert owners["conv"] == owners["dense"] == owners["dropout"] == {
        "savedmodel:float32": "conv", "tflite:float32": "dense", "tflite:uint8": "dropout",
        "onnx:float32": "conv", "openvino:float32": "dense"}
    assert sorted(owners["conv"]) == sorted(paths)
    assert owners["small"] == {"savedmodel:float32": "small", "tflite:float32": "small", "tflite:uint8": "small"}
    # a path only some variants have goes to one of those
    partial = [a for a in index if a.variant != "small" and not (a.variant == "conv" and a.format == "openvino")]
    assert beam_owners(partial, {k: contracts[k] for k in ("conv", "dense", "dropout")})["dense"]["openvino:float32"] != "conv"
    alone = beam_owners([a for a in index if a.variant == "dropout"], {"dropout": ImageContract(224)})
    assert set(alone["dropout"].values()) == {"dropout"} and sorted(alone["dropout"]) == sorted(paths)
