"""Golden files: the parity inputs and the Keras reference outputs, saved beside the artifacts.

`<root>/golden/<variant>/inputs.npz` (`image`, `names`), `outputs.npz` (one array per output)
and `meta.json` (where the reference came from). With them, parity re-runs later against a
bundle without rebuilding the model.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.core.errors import RunnerError

GOLDEN_DIR = "golden"
#: The parity batch: the sample photos, this many seeded noise images, all-black, all-white.
N_NOISE = 2
NOISE_SEED = 0


@dataclass
class Golden:
    """Inputs (one name per row) and the reference outputs for them."""

    variant: str
    inputs: np.ndarray
    names: list[str]
    outputs: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs_sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.inputs).tobytes()).hexdigest()


def golden_dir(root: str | os.PathLike, variant: str) -> Path:
    return Path(root) / GOLDEN_DIR / variant


def exists(root: str | os.PathLike, variant: str) -> bool:
    d = golden_dir(root, variant)
    return (d / "inputs.npz").is_file() and (d / "outputs.npz").is_file()


def make(built, batch_size: int = 4, n_noise: int = N_NOISE, seed: int = NOISE_SEED) -> Golden:
    """Run the Keras reference (CPU) on the parity inputs of `built` (a BuiltModel)."""
    from export.model import samples
    from export.runtimes.keras import KerasRunner
    inputs, names = samples.parity_inputs(built.input_size, n_noise=n_noise, seed=seed)
    with KerasRunner(built.model, name=f"{built.spec.name}/keras") as runner:
        chunks = [runner.infer({"image": inputs[i:i + batch_size]}) for i in range(0, len(inputs), batch_size)]
        device = runner.device
    outputs = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    from export.formats import tool_versions
    meta = {"variant": built.spec.name, "reference": "keras", "device": device,
            "weights": built.weights, "num_classes": built.num_classes, "labels": list(built.labels),
            "input_size": built.input_size,
            "noise": {"count": n_noise, "seed": seed}, "tool_versions": tool_versions()}
    return Golden(built.spec.name, inputs, names, outputs, meta)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """What np.savez_compressed writes (np.load reads it), minus the wall-clock time numpy stamps
    on each zip member: the same arrays give the same bytes, so golden files are reproducible."""
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def save(root: str | os.PathLike, golden: Golden) -> Path:
    """Write the golden files for `golden.variant` under `root/golden/` (each file atomically)."""
    from export.core.atomic import write_bytes, write_text
    d = golden_dir(root, golden.variant)
    d.mkdir(parents=True, exist_ok=True)
    write_bytes(d / "inputs.npz", _npz_bytes({"image": golden.inputs, "names": np.array(golden.names)}))
    write_bytes(d / "outputs.npz", _npz_bytes(golden.outputs))
    meta = {**golden.meta, "inputs_sha256": golden.inputs_sha256, "names": golden.names}
    write_text(d / "meta.json", json.dumps(meta, indent=2, default=str))
    return d


def load(root: str | os.PathLike, variant: str) -> Golden:
    """The golden files of `variant` under `root`; RunnerError if missing or inconsistent."""
    d = golden_dir(root, variant)
    if not exists(root, variant):
        raise RunnerError(f"no golden files for variant {variant!r} in {d} (need inputs.npz and outputs.npz)")
    try:
        with np.load(d / "inputs.npz", allow_pickle=False) as f:
            inputs, names = f["image"], [str(n) for n in f["names"]]
        with np.load(d / "outputs.npz", allow_pickle=False) as f:
            outputs = {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError) as e:
        raise RunnerError(f"golden files in {d} are unreadable ({e}); regenerate them") from None
    meta_path = d / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    bad = [k for k, v in outputs.items() if len(v) != len(inputs)]
    if len(names) != len(inputs) or bad:
        raise RunnerError(f"golden files in {d} disagree: {len(inputs)} inputs, {len(names)} names, "
                          f"outputs {({k: len(v) for k, v in outputs.items()})}")
    meta.pop("names", None)
    return Golden(variant, inputs, names, outputs, meta)


def references(root: str | os.PathLike, variants: list[str], rebuild=None,
               save_rebuilt: bool = True) -> tuple[dict[str, Golden], dict[str, str]]:
    """The reference of each variant: its golden files under `root` when present, else
    `rebuild(variant) -> Golden` (then saved as golden files when `root` is writable).

    Returns ({variant: Golden}, {variant: a one-line description of where it came from}).
    """
    from export.core.errors import UsageError
    goldens, sources = {}, {}
    for v in variants:
        if exists(root, v):
            goldens[v] = load(root, v)
            sources[v] = f"golden files {GOLDEN_DIR}/{v}/ (weights {goldens[v].meta.get('weights', {}).get('source', '?')})"
            continue
        if rebuild is None:
            raise UsageError(f"no golden files for variant {v!r} in {golden_dir(root, v)}: pass --weights SRC "
                             "(the weights it was exported with) to rebuild the reference model")
        goldens[v] = rebuild(v)
        sources[v] = f"rebuilt Keras model (weights {goldens[v].meta.get('weights', {}).get('source', '?')})"
        if save_rebuilt and os.access(root, os.W_OK):
            save(root, goldens[v])
            sources[v] += f"; saved as golden files {GOLDEN_DIR}/{v}/"
    return goldens, sources
