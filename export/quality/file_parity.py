"""End-to-end parity from the encoded file: the report of `parity --files DIR`.

Tensor parity (parity.py) feeds every format the same float pixels. Users send files, so this
report follows each file through every real path (server REST and gRPC with both signatures,
`predict --pixels`, `classify`, `score`, MediaPipe's ImageClassifier) and compares each answer
with the same artifact fed the pixels of the image contract's in-graph twin, which is what
`predict_image_bytes` computes: only the way the file became pixels differs. The running is in
serving/tools/file_parity.py (it needs the server and Beam); this module holds the data.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FILE_PARITY_FORMAT_VERSION = 1
#: Largest |probability difference| allowed for a path that decodes by the image contract. Both twins
#: give the same whole grey levels (bit for bit on test_images_tf.py's corpus): what is left is the
#: runtimes' own float differences.
CONTRACT_ATOL = 0.01
CONTRACT_SOURCE = ("image contract twins give the same whole grey levels (bit for bit on the corpus of "
                   "tests/export/test_images_tf.py); target of issue 21: 0.01 and no top-1 flip")
#: An artifact that quantizes (int8 weights and activations, dynamic range; a full-integer TFLite also takes
#: uint8 pixels) rounds its input to the activation scale inside the model: the twins' one-level
#: differences on a few pixels cross some of those boundaries, and every requantization after.
UINT8_ATOL = 0.1
UINT8_SOURCE = ("int8 activations: quantizing the contract's pixels; measured on ResNet50 `dense` (lfw_subset "
                "head, random:0 backbone), 31 files, before the contract rounded: int8 TFLite 0.070, ONNX int8 "
                "0.071; no top-1 flip")
#: MediaPipe fed the contract pre-resize gets the contract's pixels as uint8: the same whole grey levels
#: the server sees; it resizes nothing more.
MEDIAPIPE_PRE_ATOL = 1e-4  # measured 0.0 (fp32 and fp16 TFLite); was 0.1 while the contract did not round
MEDIAPIPE_PRE_SOURCE = ("MediaPipe fed the contract pre-resize (uint8, the contract's whole grey levels): target of "
                        "issue 21: 0.01, tightened to 1e-4; measured on ResNet50 `dense` (lfw_subset head, random:0 "
                        "backbone), 31 files: 0.0 on fp32 and fp16 (0.047 before the contract rounded)")
#: MediaPipe fed the raw file resizes with its own resampler (no antialiasing, not configurable): the
#: issue's target is 0.05. Rows carry the measured value beside it.
MEDIAPIPE_RAW_ATOL = 0.05
MEDIAPIPE_RAW_SOURCE = ("MediaPipe fed the raw file: its own resize (no antialiasing, not configurable from the "
                        "model), target 0.05, measured and shown, not gated: the contract pre-resize row is the "
                        "gate; EXIF-rotated files excluded (MediaPipe, like Android's BitmapFactory, ignores the tag)")


@dataclass
class PathRow:
    """One path of one artifact over the corpus, against that artifact on in-graph-decoded pixels."""

    variant: str
    artifact: str  # "savedmodel fp32", "tflite int8", ...
    path: str  # "server REST predict_image_bytes", "classify (LiteRT)", ...
    files: int
    top1_agreement: float
    max_prob_diff: float
    mean_prob_diff: float
    worst_file: str
    tolerance: float
    tolerance_source: str
    refused: list[str] = field(default_factory=list)  # files the path refused that the reference decoded
    failures: list[str] = field(default_factory=list)
    gate: bool = True  # False: measured and shown, not part of the verdict (MediaPipe fed the raw file)
    #: Files whose input tensor was bit-identical to one this loaded runner had already run (the reference's
    #: pixels, or another row's): not run again, the answer reused (a CPU runtime answers the same tensor
    #: the same way). Where the tensor is the reference's own, the difference is 0 by construction.
    same_input: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures or not self.gate

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


@dataclass
class FileParityReport:
    """Every path's row, the corpus it ran on, and what each path did with the bad files."""

    corpus: list[str]
    rows: list[PathRow] = field(default_factory=list)
    bad_files: dict[str, dict[str, str]] = field(default_factory=dict)  # file -> path -> its one-line error
    skipped: list[str] = field(default_factory=list)  # paths not run, with why
    format_version: int = FILE_PARITY_FORMAT_VERSION

    def __bool__(self) -> bool:
        return all(r.passed for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "passed": bool(self), "corpus": self.corpus,
                "rows": [r.to_dict() for r in self.rows], "bad_files": self.bad_files, "skipped": self.skipped}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileParityReport:
        rows = [PathRow(**{k: v for k, v in r.items() if k != "passed"}) for r in d.get("rows", [])]
        return cls(corpus=list(d["corpus"]), rows=rows, bad_files=d.get("bad_files", {}),
                   skipped=d.get("skipped", []), format_version=d.get("format_version", FILE_PARITY_FORMAT_VERSION))


#: Precisions whose activations are quantized: their file-parity rows are measured, not gated.
QUANTIZED = ("int8", "dynamic")


def row_tolerance(uint8_pixels: bool, quantized: bool = False) -> dict[str, Any]:
    """The row's tolerance. Rows of an artifact that takes uint8 pixels or quantizes its activations
    (int8, dynamic) are measured and shown but not gated: on conv and dropout they reached 0.14-0.20
    (make export, random:0 backbone, before the contract rounded), where the twins' differences cross
    quantization boundaries; every other path is gated at CONTRACT_ATOL."""
    out: dict[str, Any] = {"tolerance": UINT8_ATOL, "source": UINT8_SOURCE} if uint8_pixels else {}
    return {**out, "gate": not (uint8_pixels or quantized)}


def compare(variant: str, artifact: str, path: str, names: list[str], ref: dict[str, np.ndarray],
            got: dict[str, np.ndarray], tolerance: float = CONTRACT_ATOL, source: str = CONTRACT_SOURCE,
            refused: list[str] | None = None, gate: bool = True, same_input: int = 0) -> PathRow:
    """A row from per-file probabilities (`ref` and `got`: file -> [classes]); files missing from
    `got` count as refused. Fails on a probability difference above `tolerance` or a top-1 flip.
    `same_input`: how many files the runner answered without running them again (see PathRow)."""
    common = [n for n in names if n in got and n in ref]
    refused = sorted(set(refused or []) | {n for n in names if n in ref and n not in got})
    diffs = {n: np.abs(np.asarray(got[n], np.float64) - np.asarray(ref[n], np.float64)) for n in common}
    flips = [n for n in common if int(np.argmax(got[n])) != int(np.argmax(ref[n]))]
    worst = max(common, key=lambda n: float(diffs[n].max()), default="")
    row = PathRow(variant, artifact, path, len(common),
                  round(1 - len(flips) / len(common), 4) if common else 0.0,
                  float(diffs[worst].max()) if worst else 0.0,
                  float(np.mean([d.mean() for d in diffs.values()])) if diffs else 0.0,
                  worst, tolerance, source, refused, gate=gate, same_input=same_input)
    if row.max_prob_diff > tolerance:
        row.failures.append(f"largest probability difference {row.max_prob_diff:.4g} > {tolerance} ({worst})")
    if flips:
        row.failures.append(f"top-1 differs on {', '.join(flips[:5])}")
    if refused:
        row.failures.append(f"refused {', '.join(refused[:5])}")
    return row


def _verdict(row: PathRow) -> str:
    if not row.failures:
        return "pass"
    return ("measured (not gated): " if not row.gate else "FAIL: ") + "; ".join(row.failures)


def render_markdown(report: FileParityReport) -> str:
    """The parity.md section: one row per path, then what the bad files got."""
    lines = [
        "## End-to-end parity from the file",
        "",
        f"{len(report.corpus)} encoded files through every path, each compared with the same artifact fed the "
        "pixels `predict_image_bytes` decodes in the graph (the image contract's in-graph twin). \"same input\": "
        "files whose tensor was bit-identical to one the same loaded runner had already run (the reference's "
        "pixels, or the row above's), so not run again: a CPU runtime answers the same tensor the same way.",
        "",
        "| variant | artifact | path | files | same input | top-1 agreement | max prob diff | mean prob diff | tolerance "
        "| verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report.rows:
        lines.append(f"| `{r.variant}` | {r.artifact} | {r.path} | {r.files} | {r.same_input} | {r.top1_agreement:.3f} | "
                     f"{r.max_prob_diff:.2e} | {r.mean_prob_diff:.2e} | {r.tolerance} | "
                     f"{_verdict(r)} |")
    sources = sorted({r.tolerance_source for r in report.rows})
    lines += ["", *(f"- tolerance: {s}" for s in sources)]
    if report.bad_files:
        lines += ["", "Bad files, each path's one line:", ""]
        for name, by_path in sorted(report.bad_files.items()):
            for path, message in sorted(by_path.items()):
                lines.append(f"- `{name}` {path}: {message}")
    if report.skipped:
        lines += ["", *(f"- skipped: {s}" for s in report.skipped)]
    verdict = "PASSED" if report else "FAILED"
    return "\n".join(lines) + f"\n\nEnd-to-end verdict: **{verdict}**\n"
