"""`parity --files`' rows of `score` (Apache Beam), for serving.tools.file_parity.variant_part: which
artifacts take Beam's path (one per format and input dtype: beam_artifacts), which variant of an image
contract scores each path (beam_owners), and the rows and skipped lines of one variant (beam_rows).

Beam's own part of a path (listing, decoding the file by the contract in its DoFn, batching, shards,
dead letters) is the same for every precision of a format and input type, and for every variant of
one contract; what differs is the model, which each artifact's runner row checks on the same pixels.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export.images import ImageContract
from export.quality.file_parity import QUANTIZED, compare, row_tolerance

Probs = dict[str, np.ndarray]


def _beam_path(art) -> tuple[str, str]:
    """What decides an artifact's path through `score` (Beam): its format and its input's dtype."""
    return art.format, str(art.inputs[0]["dtype"]) if art.inputs else ""


def beam_key(art) -> str:
    """An artifact's Beam path as one string (picklable, JSON-able): `<format>:<input dtype>`."""
    return ":".join(_beam_path(art))


def beam_artifacts(artifacts: list) -> tuple[list, list]:
    """(scored, same path): the artifacts `score` (Beam) runs, one per format and input dtype (its highest
    precision: fp32, or OpenVINO's fp16; TFLite int8's uint8 input is a path of its own), and the
    others; both in the order given. Issue 21 asked for Beam per format; per artifact it cost ~9 CPU s
    more per variant of `make export`."""
    from export.core.registry import FORMATS

    def rank(art) -> int:
        precisions = FORMATS[art.format].precisions
        return precisions.index(art.precision) if art.precision in precisions else len(precisions)
    chosen: dict[tuple[str, str], object] = {}
    for art in sorted(artifacts, key=rank):  # the highest precision of each (the index lists TFLite's alphabetically)
        chosen.setdefault(_beam_path(art), art)
    picked = {id(a) for a in chosen.values()}
    scored = [a for a in artifacts if id(a) in picked]
    same = [a for a in artifacts if id(a) not in picked]
    return scored, same


def beam_owners(index: list, contracts: dict[str, ImageContract]) -> dict[str, dict[str, str]]:
    """variant -> {Beam path (beam_key) -> the variant that scores it}: each path of each image contract
    once, not once per variant. The paths, in the index's order, go to the variants in turn (the one
    with the fewest so far that has the path, by name), so that each variant runs some and the export
    pool's parts stay even. Saves ~9 CPU s of `make export` per variant after the first (two Beam jobs
    of ~2.7 s and more each)."""
    owners: dict[str, dict[str, str]] = {name: {} for name in contracts}
    for contract in dict.fromkeys(contracts.values()):
        names = sorted(n for n, c in contracts.items() if c == contract)
        scored = {n: [beam_key(a) for a in beam_artifacts([a for a in index if a.variant == n])[0]] for n in names}
        load = dict.fromkeys(names, 0)
        for key in dict.fromkeys(k for n in names for k in scored[n]):
            owner = min((n for n in names if key in scored[n]), key=lambda n: (load[n], n))
            load[owner] += 1
            for n in names:
                if key in scored[n]:
                    owners[n][key] = owner
    return owners


def beam_rows(part, root: Path, folder: Path, files: list[Path], artifacts: list, refs: dict[str, Probs],
              labels: list[str], owners: dict[str, str], say: Callable[[str], None]) -> None:
    """`score` on the Beam paths of `artifacts` that `owners` (beam_owners' plan for this variant; a path
    it lacks is this variant's) gives `part`'s variant, into `part` (a file_parity.VariantPart): their
    rows and refusals, and a skipped line for each precision scored on another's path."""
    variant = part.variant
    scored, same_path = beam_artifacts(artifacts)
    mine = [a for a in scored if owners.get(beam_key(a), variant) == variant]
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-file-parity.") as tmp:
        for art in mine:
            _score_rows(root, variant, art, folder, files, refs[art.key], part.rows, part.bad_files, labels, Path(tmp))
            say(f"{variant}: score {art.format} {art.precision}")
    for ran in scored:
        owner = owners.get(beam_key(ran), variant)
        left = [a.precision for a in same_path if _beam_path(a) == _beam_path(ran)]
        if owner != variant:
            part.skipped.append(f"{variant}: score (Beam) of {ran.format} {', '.join([ran.precision, *left])}: "
                                f"Beam's path ({ran.format}, {_beam_path(ran)[1]} input) is the one "
                                f"{owner} {ran.format} {ran.precision} took (one variant per image contract, "
                                "format and input type); their runner rows check their own runtime on the same pixels")
        elif left:
            part.skipped.append(f"{variant}: score (Beam) of {ran.format} {', '.join(left)}: Beam's path is the one "
                                f"{ran.format} {ran.precision} took (one artifact per format and input type); "
                                "their runner rows check their own runtime on the same pixels")


def _score_rows(bundle, variant, art, files_dir, files, ref, rows, bad, labels, tmp: Path) -> None:
    from serving.scoring import pipeline as scoring
    job = scoring.plan(str(bundle), variant, str(files_dir), str(tmp / f"{art.format}-{art.precision}" / "scores"),
                       art.format, art.precision, top_k=len(labels))
    summary = scoring.run(job)
    got: Probs = {}
    for shard in summary.outputs:
        for line in Path(shard).read_text().splitlines():
            row = json.loads(line)
            probs = np.zeros(len(labels))
            for t in row["top_k"]:
                probs[t["index"]] = t["probability"]
            got[Path(row["path"]).name] = probs
    for shard in summary.dead_letter_outputs:
        for line in Path(shard).read_text().splitlines():
            row = json.loads(line)
            bad.setdefault(Path(row["path"]).name, {})[f"score {art.format} {art.precision}"] = row["reason"]
    rows.append(compare(variant, f"{art.format} {art.precision}", "score (Apache Beam, DirectRunner)",
                        [f.name for f in files], ref, got, **row_tolerance(art.precision == "int8", art.precision in QUANTIZED)))
