"""`parity --files DIR` in the export's worker pool (export.pipeline.workers): how one run's variants
become pool tasks, one twin_pixels task per image contract and POOL_SPLIT's parts of each variant
(serving.tools.file_parity.variant_part, each taking its contract's twin pixels), and their parts
read back in task order. serving.tools.file_parity.run calls it with `workers` > 1, and hands it each
variant's contract (file_parity.variant_contracts), so that this module does not import that one."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from export.images import ImageContract

if TYPE_CHECKING:
    from serving.tools.file_parity import VariantPart

#: Peak memory of one variant's part (TensorFlow, a SavedModel, one runner at a time, Beam,
#: MediaPipe), for the export pool's budget.
VARIANT_PART_GB = 4.0
#: Peak memory of twin_pixels (TensorFlow, the twin on one 3000-px JPEG at a time).
TWIN_GB = 1.5

#: How the pool splits one variant's paths: runner formats apart from LiteRT (whose four files each add
#: `classify` and two MediaPipe rows). Three variants make six tasks of similar length, which 2
#: workers run in three full rounds, where three whole variants left a core idle for the third.
POOL_SPLIT = (("savedmodel", "onnx", "openvino"), ("tflite",))


def _task_groups(index: list) -> list[tuple[str, int, tuple[str, ...]]]:
    """(variant, part number, formats) of each pool task: POOL_SPLIT's parts that the variant has,
    then one for any format POOL_SPLIT does not name."""
    present = {(a.variant, a.format) for a in index}
    known = {f for group in POOL_SPLIT for f in group}
    groups = [*POOL_SPLIT, tuple(sorted({f for _, f in present} - known))]
    return [(name, i, group) for name in sorted({v for v, _ in present}) for i, group in enumerate(groups)
            if any((name, f) in present for f in group)]


def pool_tasks(index: list) -> int:
    """How many pool tasks the artifacts of `index` make (more workers than this would idle)."""
    return len(_task_groups(index))


def pool_plan(root: Path, folder: Path, index: list, contracts: dict[str, ImageContract], *, beam: bool,
              mediapipe: bool, threads: int, beam_owners: dict[str, dict[str, str]] | None = None) -> tuple[list, list]:
    """(twin tasks, part tasks) of the export pool for the artifacts of `index` and their variants'
    `contracts`: one twin_pixels task per image contract, and POOL_SPLIT's tasks of each variant, each
    taking its contract's twin pixels as `twin`."""
    from export.pipeline.workers import Task
    twins: dict[ImageContract, Task] = {}
    for contract in contracts.values():
        if contract not in twins:
            twins[contract] = Task(key=f"contract-{len(twins)}:twin-pixels", fn="serving.tools.file_parity:twin_pixels",
                                   kwargs={"files_dir": str(folder), "contract": contract.to_dict()},
                                   memory_gb=TWIN_GB, label=f"in-graph twin's pixels ({contract.size} px)")
    parts = [Task(key=f"{name}:file-parity:{i}", fn="serving.tools.file_parity:variant_part",
                  kwargs={"bundle": str(root), "files_dir": str(folder), "variant": name, "beam": beam,
                          "mediapipe": mediapipe, "threads": threads, "formats": group,
                          "beam_owners": (beam_owners or {}).get(name)},
                  inputs={"twin": twins[contracts[name]].key},
                  memory_gb=VARIANT_PART_GB, label=f"{name} end-to-end parity from files ({', '.join(group)})")
             for name, i, group in _task_groups(index)]
    return list(twins.values()), parts


def parts_in_pool(root: Path, folder: Path, index: list, contracts: dict[str, ImageContract], beam: bool,
                  mediapipe: bool, workers: int, threads: int | None,
                  say: Callable[[str], None], beam_owners: dict[str, dict[str, str]] | None = None) -> list[VariantPart]:
    """Each variant's paths as POOL_SPLIT's tasks in the export pool, after their contract's twin
    pixels: their parts, in task order."""
    from export.pipeline.workers import run_tasks, threads_per_task
    twins, parts = pool_plan(root, folder, index, contracts, beam=beam, mediapipe=mediapipe,
                             threads=threads or threads_per_task(workers), beam_owners=beam_owners)

    def done(t, cost) -> None:
        if t in parts:
            say(f"{t.kwargs['variant']}: {', '.join(t.kwargs['formats'])}, every path but the server's "
                f"({cost.wall_s:.0f} s)")
    pool = run_tasks([*twins, *parts], workers=workers, memory_budget_gb=VARIANT_PART_GB * workers, on_done=done)
    return [pool.results[t.key] for t in parts]
