"""Image folders, splits, demo data sets, training settings and run metrics: everything of training
that needs no TensorFlow (decoding real JPEG/PNG/BMP/GIF files written with Pillow)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from export.core.errors import DataError, ExportError, UsageError
from export.training import data
from export.training import report as train_report
from export.training.settings import TrainSettings, check_training_keys, settings_from_table

pytestmark = pytest.mark.unit


def _image(path, color, size=(40, 30), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


@pytest.fixture
def tree(tmp_path):
    """Two classes in every supported format and mode, plus files that are not images."""
    root = tmp_path / "data"
    _image(root / "cat" / "a.jpg", (200, 10, 10))
    _image(root / "cat" / "b.PNG", (200, 10, 10), mode="RGBA", fmt="PNG")
    _image(root / "cat" / "nested" / "c.bmp", (200, 10, 10), mode="L")
    _image(root / "dog" / "d.gif", (10, 10, 200), mode="P")
    _image(root / "dog" / "e.jpeg", (10, 10, 200), size=(300, 500))
    _image(root / "dog" / "f.png", (10, 10, 200), mode="LA", fmt="PNG")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("top-level file")
    return root


def test_read_folder_converts_every_format_to_rgb_at_size(tree):
    folder = data.read_image_folder(tree, 16)
    assert folder.class_names == ["cat", "dog"]
    assert folder.images.shape == (6, 16, 16, 3) and folder.images.dtype == np.uint8
    assert folder.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert folder.files[:3] == ["cat/a.jpg", "cat/b.PNG", "cat/nested/c.bmp"]
    assert sorted(folder.ignored) == ["README.md", "dog/notes.txt"] and folder.corrupt == []
    assert folder.per_class() == {"cat": 3, "dog": 3}
    reds = folder.images[folder.labels == 0].reshape(-1, 3).mean(axis=0)
    blues = folder.images[folder.labels == 1].reshape(-1, 3).mean(axis=0)
    assert reds[0] > 100 > reds[2], "red class should decode red (grey one has R=G=B)"
    assert blues[2] > 100 > blues[0] or blues[2] > blues[0]
    summary = folder.summary()
    assert summary["ignored_files"] == 2 and summary["corrupt_files"] == 0 and len(summary["sha256"]) == 64


def test_content_hash_is_stable_and_follows_the_bytes(tree):
    a = data.read_image_folder(tree, 16).sha256
    assert data.read_image_folder(tree, 24).sha256 == a == data.data_sha256(tree)
    _image(tree / "dog" / "e.jpeg", (60, 200, 60), size=(300, 500))
    assert data.data_sha256(tree) != a


def test_corrupt_files_are_skipped_and_counted_below_the_share(tree):
    for i in range(4):  # enough good files that one corrupt file stays under 10%
        _image(tree / "cat" / f"more{i}.png", (200, 10, 10))
        _image(tree / "dog" / f"more{i}.png", (10, 10, 200))
    (tree / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    folder = data.read_image_folder(tree, 8)
    assert folder.corrupt == ["dog/broken.jpg"] and len(folder.files) == 14
    assert folder.summary()["corrupt"] == ["dog/broken.jpg"]


def test_too_many_corrupt_files_is_an_error_naming_them(tree):
    (tree / "dog" / "broken.jpg").write_bytes(b"junk")
    (tree / "cat" / "bad.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=r"2 of 8 image files in --data .* cannot be read \(more than 10%\): "
                                        r"cat/bad.png, dog/broken.jpg; fix or remove them"):
        data.read_image_folder(tree, 8)


@pytest.mark.parametrize("setup,message", [
    (lambda root: None, "no such directory"),
    (lambda root: root.mkdir(), "has no class folders"),
    (lambda root: _image(root / "only" / "a.png", (0, 0, 0)),
     r"has 1 class folder \(only\); training needs at least 2"),
    (lambda root: (_image(root / "a" / "x.png", (0, 0, 0)), (root / "b").mkdir(),
                   (root / "b" / "x.txt").write_text("")),
     r"class folder .*/b has no images \(.bmp, .gif, .jpeg, .jpg, .png, .webp\); add images or remove the folder"),
    (lambda root: (root.parent.mkdir(exist_ok=True), root.write_text("")), "is not a directory"),
])
def test_unusable_folders_are_one_line_errors(tmp_path, setup, message):
    root = tmp_path / "d" / "data"
    root.parent.mkdir()
    setup(root)
    with pytest.raises(DataError, match=message) as err:
        data.read_image_folder(root, 8)
    assert "\n" not in str(err.value)


def test_class_whose_only_images_are_corrupt(tmp_path):
    for i in range(12):
        _image(tmp_path / "a" / f"{i}.png", (0, 0, 0))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"class folder .*/b has no readable images \(unreadable: b/x.png\)"):
        data.read_image_folder(tmp_path, 8)


def test_expected_class_names_must_match(tree):
    with pytest.raises(DataError, match=r"--val-data .* has classes \['cat', 'dog'\], the model has \['cat', 'cow'\]"):
        data.read_image_folder(tree, 8, what="--val-data", class_names=["cat", "cow"])


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = np.repeat([0, 1, 2], [10, 20, 5])
    train, val = data.stratified_split(labels, 0.2, seed=3)
    assert np.bincount(labels[val]).tolist() == [2, 4, 1]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(35))
    again = data.stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(val, again[1]) and not np.array_equal(val, data.stratified_split(labels, 0.2, seed=4)[1])


def test_val_split_that_starves_a_class_is_an_error():
    labels = np.repeat([0, 1], [10, 2])
    with pytest.raises(DataError, match=r"--val-split 0.2 leaves class 'rare' \(2 images\) with no validation image; "
                                        r"raise --val-split, add images, or give --val-data DIR"):
        data.stratified_split(labels, 0.2, class_names=["common", "rare"])
    with pytest.raises(DataError, match="with no training image"):
        data.stratified_split(np.repeat([0, 1], [1, 10]), 0.9, class_names=["a", "b"])


def test_stratified_sample_keeps_proportions_and_every_class():
    labels = np.repeat([0, 1, 2], [50, 30, 2])
    idx = data.stratified_sample(labels, 10, seed=0)
    counts = np.bincount(labels[idx], minlength=3).tolist()
    assert sum(counts) == 10 and counts[2] >= 1 and counts[0] > counts[1]
    assert np.array_equal(idx, data.stratified_sample(labels, 10, seed=0))
    assert len(data.stratified_sample(labels, 500)) == 82


def test_subsample_caps_each_class_with_a_seed(tree):
    index = data.scan_folder(tree)
    a = index.subsample(2, seed=0)
    assert a.per_class() == {"cat": 2, "dog": 2}
    assert a.files == index.subsample(2, seed=0).files
    assert index.subsample(None).files == index.files


@pytest.mark.parametrize("name,classes,total", [("lfw_subset", ["face", "non_face"], 200),
                                                 ("digits", [str(i) for i in range(10)], 1797)])
def test_demo_data_sets_are_written_as_image_folders(tmp_path, name, classes, total):
    out = tmp_path / name
    result = data.write_demo(name, out)
    assert result["images"] == total and sorted(p.name for p in out.iterdir()) == classes
    folder = data.read_image_folder(out, 8)
    assert folder.class_names == classes and len(folder.files) == total and not folder.corrupt
    assert data.write_demo(name, tmp_path / "again")["images"] == total
    assert data.data_sha256(tmp_path / "again") == folder.sha256, "demo data must be byte-identical every time"
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        data.write_demo(name, out)
    small = data.write_demo(name, out, max_per_class=3, overwrite=True)
    assert set(small["images_per_class"].values()) == {3}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unknown_demo_data_set():
    with pytest.raises(DataError, match="unknown demo data set 'cifar'; choose one of: lfw_subset, digits"):
        data.demo_dataset("cifar")


def test_classification_metrics():
    labels = np.array([0, 0, 1, 1, 2])
    logits = np.array([[5, 0, 0], [0, 5, 0], [0, 5, 0], [0, 5, 0], [0, 0, 5]], dtype=float)
    m = train_report.classification_metrics(labels, logits, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    assert m["per_class"]["b"] == {"precision": pytest.approx(2 / 3, abs=1e-6), "recall": 1.0, "images": 2}
    assert m["per_class"]["a"]["recall"] == 0.5
    expected_loss = np.mean([-np.log(np.exp(5) / (np.exp(5) + 2))] * 4 + [-np.log(1 / (np.exp(5) + 2))])
    assert m["loss"] == pytest.approx(expected_loss, abs=1e-5)
    json.dumps(m)


def test_charts_are_pngs(tmp_path):
    history = [{"epoch": 0, "phase": 1, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
               {"epoch": 1, "phase": 2, "loss": 0.5, "accuracy": 0.8, "val_loss": 0.7, "val_accuracy": 0.7}]
    train_report.plot_history(history, tmp_path / "training.png")
    train_report.plot_confusion([[3, 1], [0, 4]], ["a", "b"], tmp_path / "confusion.png")
    for name in ("training.png", "confusion.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] > 300


def test_training_settings_checks():
    assert TrainSettings().check().epochs == 200 and TrainSettings().patience == 10  # EarlyStopping decides
    with pytest.raises(UsageError, match="--solver must be one of auto, lbfgs, adam, got 'sgd'"):
        TrainSettings(solver="sgd").check()
    with pytest.raises(UsageError, match="--l2 must be >= 0, got -1"):
        TrainSettings(l2=-1).check()
    with pytest.raises(UsageError, match="--fine-tune-epochs needs --unfreeze-stages N"):
        TrainSettings(fine_tune_epochs=2).check()
    with pytest.raises(UsageError, match="--unfreeze-stages needs --fine-tune-epochs E"):
        TrainSettings(unfreeze_stages=1).check()
    with pytest.raises(UsageError, match="--learning-rate must be > 0"):
        TrainSettings(learning_rate=0).check()


@pytest.mark.parametrize("variant,message", [
    ({"name": "dense", "train": {"epochs": 3}}, "train settings without data"),
    ({"name": "dense", "data": "demo:digits", "labels": ["a"]}, "labels come from the class folders"),
    ({"name": "dense", "data": "demo:digits", "train": {"epoch": 3}}, r"unknown train setting\(s\) \['epoch'\]"),
    ({"name": "dense", "data": "demo:digits", "train": {"epochs": "3"}}, "train.epochs must be int, got '3'"),
    ({"name": "dense", "data": "demo:digits", "train": {"val_split": 1.5}}, "val_split must be between 0 and 1"),
    ({"name": "dense", "data": "demo:digits", "train": {"batch_size": 0}}, "batch_size must be >= 1"),
    ({"name": "dense", "data": 3}, "data must be \"demo:NAME\" or the path"),
    ({"name": "dense", "data": "demo:digits", "train": {"standardize": 1}}, "train.standardize must be bool, got 1"),
    ({"name": "dense", "data": "demo:digits", "train": {"solver": "sgd"}}, "solver must be one of auto, lbfgs, adam"),
])
def test_bad_training_config(variant, message):
    with pytest.raises(UsageError, match=message):
        check_training_keys(variant, "cfg.toml: variant 'dense'")


def test_training_config_becomes_settings():
    v = {"name": "dense", "data": "demo:digits", "train": {"epochs": 3, "max_per_class": 20, "learning_rate": 1,
                                                            "l2": 0.01, "solver": "adam", "standardize": False}}
    check_training_keys(v, "x")
    assert v["settings"] == TrainSettings(epochs=3, max_per_class=20, learning_rate=1, l2=0.01, solver="adam",
                                          standardize=False)
    assert settings_from_table({}, "x") == TrainSettings()


def test_no_tensorflow_imported():
    import subprocess
    code = ("import sys, export.training.data, export.training.report, export.training.settings, export.training.runs,"
            " export.training.fitting;"
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "data / train_report / train_settings / train_runs must not import TensorFlow"
