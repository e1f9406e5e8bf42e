"""`resnet-deploy train`: the fast path and the full graph, fine-tuning, determinism, RUN_DIR, plain-Keras
loading, MirroredStrategy on two logical CPUs, cached runs, and every bad input by its message.

Real ResNet50 backbones (random:0) at 32x32 pixels on a small three-colour image folder, a few epochs.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.cli.app import main
from export.core.locks import LOCK_NAME
from export.training.settings import RUN_FILES, TrainSettings
from export.training.train import train
from tests.helpers import ROOT, run_cli

# Tests that build a ResNet50 (at 32x32) and train it are e2e; the bad-input tests stop before any model is
# built and are integration tests.

SIZE = 32
COLOURS = {"blue": (30, 40, 200), "green": (40, 180, 40), "red": (200, 30, 30)}
BASE = ["--input-size", str(SIZE), "--batch-size", "8", "--learning-rate", "0.001"]


def _colour_folder(root: Path, per_class: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(rgb, 40, size=(40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """3 classes x 12 noisy colour images, one corrupt file (skipped, under 10%) and one text file."""
    root = _colour_folder(tmp_path_factory.mktemp("colours") / "data", per_class=12)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "green" / "notes.txt").write_text("ignored")
    return root


def _settings(**kw) -> TrainSettings:
    return TrainSettings(**{"input_size": SIZE, "epochs": 6, "batch_size": 8, "learning_rate": 0.001, **kw})


@pytest.fixture(scope="module")
def fast_run(colours, tmp_path_factory):
    work = tmp_path_factory.mktemp("runs")
    metrics = train("dense", colours, work / "run", settings=_settings(), cache_dir=work / "cache", verbose=0)
    return work, work / "run", metrics


def _weights(path: Path) -> list[np.ndarray]:
    import keras
    return keras.models.load_model(path).get_weights()


@pytest.mark.e2e
def test_run_dir_contents(fast_run, colours):
    _, run, metrics = fast_run
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME], "staging left"
    assert (run / "labels.txt").read_text().splitlines() == ["blue", "green", "red"]
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    # 32x32 pixels through a random backbone, 6 validation images: it learns, but far from perfectly.
    assert metrics["train"]["accuracy"] >= 0.9 and metrics["val"]["accuracy"] >= 0.5, metrics["val"]
    for split in ("train", "val"):
        m = metrics[split]
        assert set(m["per_class"]) == {"blue", "green", "red"}
        assert {"precision", "recall", "images"} <= set(m["per_class"]["red"])
        assert np.array(m["confusion_matrix"]).shape == (3, 3) and np.sum(m["confusion_matrix"]) == m["images"]
        assert m["loss"] > 0
    d = metrics["data"]
    assert d["images_per_class"] == {"blue": 12, "green": 12, "red": 12}
    assert d["val_images_per_class"] == {"blue": 2, "green": 2, "red": 2}
    assert d["corrupt"] == ["red/broken.png"] and d["corrupt_files"] == 1 and d["ignored_files"] == 1
    from export.training.data import data_sha256
    assert d["sha256"] == data_sha256(colours)
    assert metrics["feature_cache"]["hit"] is False and Path(metrics["feature_cache"]["path"]).is_file()
    assert metrics["fast_path_max_abs_logit_diff"] < 1e-4  # the folded model on images = the head on features
    fit = metrics["head_fit"]
    assert fit["solver"] == "lbfgs" and fit["scaling"]["centred"] is True and fit["scaling"]["channels"] == 2048
    assert [t["l2"] for t in fit["grid"]] == [0.1, 0.01, 0.001, 0.0001] and fit["chosen"]["l2"] in (0.1, 0.01, 0.001, 0.0001)
    # the best validation accuracy; ties to the stronger L2 (fitting.best_trial), then the lower loss
    best = max(fit["grid"], key=lambda t: (t["val_accuracy"], t["l2"], -t["val_loss"]))
    assert fit["chosen"]["l2"] == best["l2"] and metrics["val"]["accuracy"] == pytest.approx(best["val_accuracy"])
    assert 0 <= metrics["probe"]["val_accuracy"] <= 1 and "LogisticRegression" in metrics["probe"]["model"]
    assert {"data", "features", "phase1", "total"} <= set(metrics["seconds"])
    config = json.loads((run / "config.json").read_text())
    assert config["settings"]["epochs"] == 6 and config["weights"] == "random:0" and config["input_size"] == SIZE
    assert config["data_sha256"] == d["sha256"] and {"tensorflow", "keras", "python"} <= set(config["tool_versions"])
    history = (run / "history.csv").read_text().splitlines()
    assert history[0].split(",") == ["epoch", "accuracy", "loss", "phase", "val_accuracy", "val_loss"]
    assert len(history) == 1 + metrics["epochs_run"]["phase1"] and all(r.split(",")[3] == "1" for r in history[1:])
    for png in ("training.png", "confusion.png"):
        with Image.open(run / png) as img:
            assert img.format == "PNG"


@pytest.mark.e2e
def test_same_seed_and_data_give_the_same_weights_in_a_fresh_process(fast_run, colours):
    work, run, _ = fast_run
    r = run_cli("train", "--variant", "dense", "--data", str(colours), "--out", str(work / "again"), *BASE,
                "--epochs", "6", "--cache-dir", str(work / "cache"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"dense: val accuracy {fast_run[2]['val']['accuracy']:.3f} (probe {fast_run[2]['probe']['val_accuracy']:.3f})" \
        in r.stdout
    again = json.loads((work / "again" / "metrics.json").read_text())
    assert again["feature_cache"]["hit"] is True
    a, b = _weights(run / "model.keras"), _weights(work / "again" / "model.keras")
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.e2e
def test_the_dense_head_shares_its_feature_pass_with_a_conv_head_and_alone_caches_only_pooled_vectors(
        fast_run, colours, tmp_path):
    """One feature pass per backbone and data: with share_maps (make export, when a conv head trains after
    it) the dense head caches the backbone's maps and pools them with its own GlobalAveragePooling2D; the
    conv head then takes them. Dense alone (fast_run) caches the pooled vectors only (8 KB an image at
    224 px, not the maps' 400 KB)."""
    _, _, alone = fast_run
    assert np.load(alone["feature_cache"]["path"]).ndim == 2
    cache = tmp_path / "cache"
    dense = train("dense", colours, tmp_path / "dense", settings=_settings(), cache_dir=cache, verbose=0, share_maps=True)
    assert dense["feature_cache"]["hit"] is False and np.load(dense["feature_cache"]["path"]).ndim == 4
    assert dense["fast_path_max_abs_logit_diff"] < 1e-4  # the dense model on images = its head on the pooled maps
    assert dense["val"]["accuracy"] == alone["val"]["accuracy"]  # the same fit as from its own pooled vectors
    conv = train("conv", colours, tmp_path / "conv", settings=_settings(epochs=1, solver="adam", standardize=False),
                 cache_dir=cache, verbose=0)
    assert conv["feature_cache"]["hit"] is True and conv["feature_cache"]["path"] == dense["feature_cache"]["path"]
    assert conv["fast_path_max_abs_logit_diff"] < 1e-4  # the saved conv model on images = its head on the maps
    assert sorted(p.name for p in cache.iterdir()) == [Path(dense["feature_cache"]["path"]).name]


@pytest.mark.e2e
def test_fast_path_matches_training_through_the_full_graph(fast_run, colours):
    """With Adam on raw features (what the full graph can do), the cached-feature fit is the same fit."""
    work, _, _ = fast_run
    adam = _settings(solver="adam", standardize=False)
    fast = train("dense", colours, work / "adam", settings=adam, cache_dir=work / "cache", verbose=0)
    full = train("dense", colours, work / "full", settings=dataclasses.replace(adam, feature_cache=False), verbose=0)
    assert full["feature_cache"] == {"used": False} and fast["head_fit"]["solver"] == "adam"
    assert full["epochs_run"] == fast["epochs_run"] and fast["probe"] and full["probe"] is None
    a, b = _weights(work / "adam" / "model.keras"), _weights(work / "full" / "model.keras")
    assert all(np.allclose(x, y, atol=1e-4) for x, y in zip(a, b, strict=True))
    assert full["val"]["accuracy"] == fast["val"]["accuracy"]


@pytest.mark.e2e
def test_fine_tuning_unfreezes_the_last_stage_only(fast_run, colours):
    import keras

    from export.model.build import build
    from export.model.variants import get_variant
    work, _, _ = fast_run
    metrics = train("dense", colours, work / "tuned", cache_dir=work / "cache", verbose=0,
                    settings=_settings(epochs=2, unfreeze_stages=1, fine_tune_epochs=2, solver="adam"))
    history = (work / "tuned" / "history.csv").read_text().splitlines()[1:]
    phases = [(int(r.split(",")[0]), r.split(",")[3]) for r in history]
    assert phases == [(0, "1"), (1, "1"), (2, "2"), (3, "2")]
    assert metrics["epochs_run"] == {"phase1": 2, "phase2": 2} and "phase2" in metrics["seconds"]
    tuned = keras.models.load_model(work / "tuned" / "model.keras")
    start = build(get_variant("dense"), num_classes=3, input_size=SIZE, labels=["blue", "green", "red"]).model
    assert [la.name for la in tuned.layers] == [la.name for la in start.layers], "augmentation leaked into the model"

    def w(model, layer):
        return model.get_layer("resnet50").get_layer(layer).get_weights()
    assert not np.array_equal(w(tuned, "conv5_block3_3_conv")[0], w(start, "conv5_block3_3_conv")[0])
    for frozen in ("conv4_block6_3_conv", "conv5_block3_3_bn", "preprocess"):
        got = tuned.get_layer(frozen).get_weights() if frozen == "preprocess" else w(tuned, frozen)
        ref = start.get_layer(frozen).get_weights() if frozen == "preprocess" else w(start, frozen)
        assert all(np.array_equal(x, y) for x, y in zip(got, ref, strict=True)), frozen
    assert not tuned.get_layer("resnet50").trainable_weights, "saved with the backbone unfrozen"


@pytest.mark.e2e
def test_keras_files_load_with_plain_keras_in_a_fresh_interpreter(fast_run, tmp_path):
    """A colleague with Keras and not resnet-deploy can load RUN_DIR/model.keras and `build --save` files."""
    import keras

    from export.core.atomic import save_keras_atomic
    from export.model.build import build
    from export.model.variants import get_variant
    _, run, _ = fast_run
    saved = tmp_path / "built.keras"
    save_keras_atomic(build(get_variant("conv"), input_size=SIZE).model, saved)
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = textwrap.dedent(f"""
        import json, sys, numpy as np, keras
        x = np.load({str(tmp_path / 'x.npy')!r})
        out = {{p: keras.models.load_model(p)(x)["logits"].numpy().tolist() for p in sys.argv[1:]}}
        assert not [m for m in sys.modules if m == "export" or m.startswith(("export.", "serving"))], "project imported"
        print(json.dumps(out))
    """)
    r = subprocess.run([sys.executable, "-I", "-c", code, str(run / "model.keras"), str(saved)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    logits = json.loads(r.stdout.strip().splitlines()[-1])
    for path in (run / "model.keras", saved):
        here = keras.models.load_model(path)(x)["logits"].numpy()
        np.testing.assert_allclose(np.array(logits[str(path)]), here, rtol=1e-5, atol=1e-5)


@pytest.mark.e2e
def test_mirrored_strategy_on_two_logical_cpus_with_a_validation_folder(colours, tmp_path):
    val = _colour_folder(tmp_path / "val", per_class=3, seed=1)
    code = textwrap.dedent("""
        import sys, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from export.cli.app import main
        assert main([*sys.argv[1:], "--batch-size", "1"]) == 2  # one example cannot feed two replicas
        sys.exit(main(sys.argv[1:]))
    """)
    out = tmp_path / "mirrored"
    r = subprocess.run([sys.executable, "-c", code, "train", "--variant", "conv", "--data", str(colours),
                        "--val-data", str(val), "--out", str(out), *BASE, "--epochs", "2", "--distribute", "mirrored",
                        "--cache-dir", str(tmp_path / "cache"), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads(r.stdout)
    config = json.loads((out / "config.json").read_text())
    assert config["distribute"] == "mirrored" and config["replicas"] == 2
    assert config["devices"] == ["CPU:0", "CPU:1"]
    assert metrics["val"]["images"] == 9 and metrics["val_data"]["images_per_class"] == {c: 3 for c in COLOURS}
    assert metrics["data"]["train_images_per_class"] == {c: 12 for c in COLOURS}
    assert "phase 1 epoch 1/2" in r.stderr and sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    assert "error: --batch-size 1 is smaller than the 2 devices of --distribute mirrored" in r.stderr


@pytest.mark.integration
def test_batches_never_leave_a_replica_without_examples():
    from export.training.train import Batches
    x = np.arange(10, dtype=np.uint8)[:, None]
    odd = Batches(x[:9], None, 8, replicas=2)  # 8 + 1: the 1 is padded to 2, one per replica
    assert [odd[i][:, 0].tolist() for i in range(len(odd))] == [list(range(8)), [8, 8]] and odd.n_out == 9
    labelled = Batches(x[:9], np.arange(9), 8, replicas=2)
    _, y, w = labelled[1]
    assert y.tolist() == [8, 8] and w.tolist() == [1.0, 0.0]  # the padding weighs nothing
    assert labelled[0][2].tolist() == [1.0] * 8
    assert [len(Batches(x, None, 8, replicas=2)[i]) for i in range(2)] == [8, 2]
    assert len(Batches(x, None, 4)) == 3 and len(Batches(x, np.arange(10), 4)[0]) == 2  # (x, y) on one device
    shuffled = Batches(x, np.arange(10), 4, seed=0)
    first = np.concatenate([shuffled[i][1] for i in range(len(shuffled))])
    shuffled.on_epoch_end()
    second = np.concatenate([shuffled[i][1] for i in range(len(shuffled))])
    assert sorted(first) == sorted(second) == list(range(10)) and not np.array_equal(first, second)
    assert shuffled[0][0].dtype == np.float32


# -- bad input: one line on stderr, exit 2, nothing written ----------------------------------------

def _one_colour(root: Path) -> Path:
    _colour_folder(root, per_class=3)
    for name in ("green", "blue"):
        for p in (root / name).iterdir():
            p.unlink()
        (root / name).rmdir()
    return root


def _corrupt(root: Path) -> Path:
    _colour_folder(root, per_class=3)
    for i in range(2):
        (root / "red" / f"bad{i}.jpg").write_bytes(b"not a jpeg")
    return root


def _empty_class(root: Path) -> Path:
    _colour_folder(root, per_class=3)
    (root / "grey").mkdir()
    (root / "grey" / "notes.txt").write_text("")
    return root


BAD = [
    ("missing", lambda d: d, [], "error: --data {data}: no such directory; put each class's images in its own"),
    ("empty", lambda d: (d.mkdir(), d)[1], [], "error: --data {data} has no class folders"),
    ("one class", _one_colour, [], "has 1 class folder (red); training needs at least 2 classes"),
    ("class without images", _empty_class, [], "error: class folder {data}/grey has no images"),
    ("corrupt", _corrupt, [], "2 of 11 image files in --data {data} cannot be read (more than 10%): red/bad0.jpg, "
                              "red/bad1.jpg; fix or remove them"),
    ("val split", lambda d: _colour_folder(d, per_class=2), ["--val-split", "0.2"],
     "error: --val-split 0.2 leaves class 'blue' (2 images) with no validation image; raise --val-split"),
    ("num classes", lambda d: _colour_folder(d, per_class=3), ["--num-classes", "5"],
     "error: --num-classes 5 disagrees with the 3 class folders in {data} (blue, green, red); drop --num-classes"),
    ("val data classes", lambda d: _colour_folder(d, per_class=3), ["--val-data", "{data}/red"],
     "error: --val-data {data}/red has no class folders"),
    ("fine-tune", lambda d: _colour_folder(d, per_class=3), ["--fine-tune-epochs", "2"],
     "error: --fine-tune-epochs needs --unfreeze-stages N"),
    ("mirrored", lambda d: _colour_folder(d, per_class=3), ["--distribute", "mirrored"],
     "error: --distribute mirrored needs at least two devices, this machine has one (CPU:0); use --distribute none"),
    ("variant", lambda d: _colour_folder(d, per_class=3), ["--variant", "resnet"], "error: unknown variant 'resnet'"),
]


@pytest.mark.integration
@pytest.mark.parametrize("case,make,extra,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, make, extra, message):
    data = make(tmp_path / "data")
    out = tmp_path / "runs" / "run"
    extra = [e.format(data=data) for e in extra]
    args = ["train", "--variant", "dense", "--data", str(data), "--out", str(out), *BASE, "--epochs", "1", *extra]
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    assert message.format(data=data) in lines[0], lines[0]
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))


@pytest.mark.integration
def test_existing_run_dir_needs_overwrite(tmp_path, capsys):
    data = _colour_folder(tmp_path / "data", per_class=3)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_text("an earlier run")
    assert main(["train", "--variant", "dense", "--data", str(data), "--out", str(run), *BASE]) == 2
    assert f"error: RUN_DIR {run} already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert (run / "model.keras").read_text() == "an earlier run" and len(list(tmp_path.iterdir())) == 2


@pytest.mark.integration
def test_cli_error_is_one_line_without_traceback(tmp_path, capsys):
    r = run_cli("train", "--variant", "dense", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: --data"), r.stderr
    assert main(["train", "--variant", "dense"]) == 2
    assert "error: train needs --data, --out (or --config FILE" in capsys.readouterr().err
    assert main(["train", "--config", "configs/variants.toml", "--out", "x"]) == 2
    assert "error: --config trains what the config lists; drop --out" in capsys.readouterr().err


@pytest.mark.integration
def test_bad_settings_and_folders_are_said_before_tensorflow_is_imported(tmp_path):
    """`train` checks its settings and the class folders (listing them, not decoding) before it
    imports TensorFlow (~5 s); the config path imports it after reading the config."""
    code = ("import sys\nfrom export.cli.app import main\n"
            "base = ['train', '--variant', 'dense', '--out', sys.argv[1] + '/run']\n"
            "rcs = [main(base + ['--data', sys.argv[1] + '/nope']), main(base + ['--data', sys.argv[1] + '/one']),\n"
            "       main(['train', '--config', sys.argv[1] + '/missing.toml'])]\n"
            "print('RCS', rcs, 'TENSORFLOW', 'tensorflow' in sys.modules)\n")
    _colour_folder(tmp_path / "one", per_class=2)
    for extra in ("green", "blue"):
        shutil.rmtree(tmp_path / "one" / extra)  # one class left: not a data set
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert "RCS [2, 2, 2] TENSORFLOW False" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.count("\n") == 3 and r.stderr.startswith(f"error: --data {tmp_path}/nope: no such directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one"]  # nothing written


@pytest.mark.integration
def test_demo_data_command(tmp_path):
    r = run_cli("demo-data", "lfw_subset", "--out", str(tmp_path / "lfw"), "--max-per-class", "4")
    assert r.returncode == 0 and "wrote 8 images of lfw_subset" in r.stdout, r.stderr
    assert sorted(p.name for p in (tmp_path / "lfw").iterdir()) == ["face", "non_face"]
    r = run_cli("demo-data", "lfw_subset", "--out", str(tmp_path / "lfw"))
    assert r.returncode == 2 and "already exists; pass --overwrite" in r.stderr
    r = run_cli("demo-data", "mnist", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown demo data set 'mnist'; choose one of: lfw_subset, digits" in r.stderr


# -- cached runs (make train / make export) ----------------------------------------------------------

@pytest.mark.e2e
def test_configured_run_is_trained_once_and_reused(colours, tmp_path):
    from export.core.errors import UsageError
    from export.model.variants import get_variant
    from export.training.runs import ensure_run, run_key
    variant = {"name": "dense", "data": str(colours), "weights": "random:0", "settings": _settings(epochs=2)}
    first = ensure_run(variant, tmp_path / "runs")
    assert not first.cached and first.model_path.is_file() and first.class_names == ["blue", "green", "red"]
    second = ensure_run(variant, tmp_path / "runs")
    assert second.cached and second.path == first.path and second.metrics == first.metrics
    record = second.provenance()
    assert record["data_sha256"] == first.config["data_sha256"] and record["val_accuracy"] == first.val_accuracy
    assert record["run_key"] == first.key and record["settings"]["epochs"] == 2
    spec = get_variant("dense")
    sha = first.config["data_sha256"]
    assert run_key(spec, sha, _settings(epochs=3), "random:0") != first.key
    assert run_key(spec, sha, _settings(epochs=2), "random:1") != first.key
    assert run_key(spec, sha, _settings(epochs=2), "random:0") == first.key
    with pytest.raises(UsageError, match=r"variant 'dense': num_classes = 4 but its data .* has 3 class folders"):
        ensure_run({**variant, "num_classes": 4}, tmp_path / "runs")
