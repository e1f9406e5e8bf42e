"""The training recipe (TrainSettings) and its reading from a bundle config's `train = {...}` table.

No TensorFlow here: `make export` checks its config before anything heavy starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from export.core.errors import UsageError

#: Bumped when the run directory's contents or the training recipe change.
#: 2: standardised features folded into the head, L2/learning-rate grid, L-BFGS dense head, probe.
TRAIN_FORMAT_VERSION = 2
#: How the head is fitted on the fast path: lbfgs (convex softmax solver; heads that are one Dense on
#: pooled features), adam (model.fit), auto (lbfgs where it applies, else adam).
SOLVERS = ("auto", "lbfgs", "adam")
RUN_FILES = ("model.keras", "labels.txt", "metrics.json", "history.csv", "training.png", "confusion.png",
             "config.json")


@dataclass(frozen=True)
class TrainSettings:
    """The training recipe: everything besides data and weights that decides the trained weights."""

    epochs: int = 200  # at most: EarlyStopping (patience) decides; an epoch on cached features costs milliseconds
    batch_size: int = 32
    learning_rate: float | None = None  # None: chosen on the validation split from fitting.ADAM_LR_GRID
    val_split: float = 0.2
    seed: int = 0
    patience: int = 10
    max_per_class: int | None = None
    unfreeze_stages: int = 0
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float | None = None  # default: learning_rate / 10
    feature_cache: bool = True  # False: phase 1 through the full graph (slow; the comparison)
    input_size: int | None = None  # default: the variant's
    l2: float | None = None  # lbfgs: None = chosen on the validation split from fitting.DENSE_L2_GRID
    solver: str = "auto"  # see SOLVERS
    standardize: bool = True  # fast path: fit on scaled features, folded into the head's first layer

    def check(self) -> TrainSettings:
        """UsageError for values that cannot train; returns self."""
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.solver not in SOLVERS:
            raise UsageError(f"--solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.l2 is not None and not self.l2 >= 0:
            raise UsageError(f"--l2 must be >= 0, got {self.l2}")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.max_per_class is not None and self.max_per_class < 2:
            raise UsageError(f"--max-per-class must be >= 2, got {self.max_per_class}")
        if self.fine_tune_epochs and not self.unfreeze_stages:
            raise UsageError("--fine-tune-epochs needs --unfreeze-stages N (the stages to fine-tune)")
        if self.unfreeze_stages and not self.fine_tune_epochs:
            raise UsageError("--unfreeze-stages needs --fine-tune-epochs E (how long to fine-tune)")
        return self


#: Fields of TrainSettings a config's `train = {...}` table may set.
SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "epochs": (int,), "batch_size": (int,), "learning_rate": (int, float), "val_split": (float,), "seed": (int,),
    "patience": (int,), "max_per_class": (int,), "unfreeze_stages": (int,), "fine_tune_epochs": (int,),
    "fine_tune_learning_rate": (int, float), "input_size": (int,), "l2": (int, float), "solver": (str,),
    "standardize": (bool,),
}


def settings_from_table(table: dict[str, Any], where: str) -> TrainSettings:
    """A checked TrainSettings from a config's `train` table; UsageError naming `where` and the key."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: train must be a table, e.g. train = {{ epochs = 10 }}")
    unknown = sorted(set(table) - set(SETTING_TYPES))
    if unknown:
        raise UsageError(f"{where}: unknown train setting(s) {unknown}; allowed: {sorted(SETTING_TYPES)}")
    for key, value in table.items():
        if (isinstance(value, bool) and bool not in SETTING_TYPES[key]) or not isinstance(value, SETTING_TYPES[key]):
            kind = " or ".join(t.__name__ for t in SETTING_TYPES[key])
            raise UsageError(f"{where}: train.{key} must be {kind}, got {value!r}")
    settings = TrainSettings(**table)
    try:
        settings.check()
        if not 0 < settings.val_split < 1:
            raise UsageError(f"val_split must be between 0 and 1, got {settings.val_split}")
    except UsageError as e:
        raise UsageError(f"{where}: {str(e).replace('--', '').replace('-', '_')}") from None
    return settings


def check_training_keys(variant: dict[str, Any], where: str) -> None:
    """Check a config variant's `data` and `train` keys and store its TrainSettings as `settings`."""
    data, table = variant.get("data"), variant.get("train")
    if data is None:
        if table is not None:
            raise UsageError(f"{where}: train settings without data; add data = \"demo:NAME\" or a folder")
        return
    if not isinstance(data, str) or not data.strip():
        raise UsageError(f"{where}: data must be \"demo:NAME\" or the path of a class-per-folder image tree")
    if "labels" in variant:
        raise UsageError(f"{where}: labels come from the class folders of its data; remove labels")
    variant["settings"] = settings_from_table(table or {}, where)
