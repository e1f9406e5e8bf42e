"""serve's helpers without a server: which directory a BUNDLE argument means, and the exact
TF Serving commands printed (docker) or run (tensorflow_model_server) for it."""
from __future__ import annotations

import tarfile

import pytest

from export.core.errors import BundleError
from export.deploy import tfserving as config
from serving.commands import bundle_dir, docker_command, model_server_command

pytestmark = pytest.mark.unit


def fake_bundle(root):
    (root / "tfserving" / "dense" / "1").mkdir(parents=True)
    (root / "models.config").write_text(config.bundle_models_config({"dense": [1]}))
    (root / "batching.config").write_text(config.batching_config())
    (root / "monitoring.config").write_text(config.monitoring_config())
    return root


def test_bundle_dir_accepts_a_directory_or_its_tarball(tmp_path):
    b = fake_bundle(tmp_path / "resnet-1")
    assert bundle_dir(b) == b.resolve()
    tar_path = tmp_path / "resnet-1.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(b, arcname="resnet-1")
    assert bundle_dir(tar_path, tmp_path / "work") == b.resolve()  # the directory it was packed from
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "resnet-1.tar.gz").write_bytes(tar_path.read_bytes())
    unpacked = bundle_dir(moved / "resnet-1.tar.gz", tmp_path / "work")
    assert unpacked == (tmp_path / "work" / "resnet-1").resolve() and (unpacked / "models.config").is_file()


@pytest.mark.parametrize("change", ["edited", "added", "removed"])
def test_a_directory_beside_the_tarball_that_differs_is_not_served_for_it(tmp_path, change):
    """`serve X.tar.gz` with an X/ beside it that changed since packing (a file edited to the same
    size, added or removed): the tarball is unpacked and served, not the directory."""
    b = fake_bundle(tmp_path / "resnet-1")
    (b / "tfserving" / "dense" / "1" / "saved_model.pb").write_bytes(b"graph-v1")
    tar_path = tmp_path / "resnet-1.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(b, arcname="resnet-1")
    if change == "edited":
        (b / "tfserving" / "dense" / "1" / "saved_model.pb").write_bytes(b"graph-v2")
    elif change == "added":
        (b / "tfserving" / "dense" / "2").mkdir()
        (b / "tfserving" / "dense" / "2" / "saved_model.pb").write_bytes(b"graph-v9")
    else:
        (b / "batching.config").unlink()
    served = bundle_dir(tar_path, tmp_path / "work")
    assert served == (tmp_path / "work" / "resnet-1").resolve()
    assert (served / "tfserving" / "dense" / "1" / "saved_model.pb").read_bytes() == b"graph-v1"
    expected = {"edited": "tfserving/dense/1/saved_model.pb differs",
                "added": "tfserving/dense/2/saved_model.pb is not in the tarball",
                "removed": "batching.config differs"}[change]
    with pytest.raises(BundleError, match=rf"resnet-1 is not what .*resnet-1\.tar\.gz holds \({expected}\); "):
        bundle_dir(tar_path)


def test_bundle_dir_refuses_what_is_not_a_bundle(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(BundleError, match=r"is neither a bundle directory nor a \.tar\.gz bundle"):
        bundle_dir(tmp_path / "notes.txt")
    with pytest.raises(BundleError, match=r"is not a bundle: no models\.config and no tfserving/ directory"):
        bundle_dir(tmp_path)


def test_docker_command_mounts_the_bundle_at_models(tmp_path):
    b = fake_bundle(tmp_path / "b")
    assert docker_command(b, 8501, 8500) == [
        "docker", "run", "--rm", "-p", "127.0.0.1:8500:8500", "-p", "127.0.0.1:8501:8501",
        "-v", f"{b}:/models:ro", "tensorflow/serving", "--model_config_file=/models/models.config",
        "--enable_batching=true", "--batching_parameters_file=/models/batching.config",
        "--monitoring_config_file=/models/monitoring.config"]
    assert docker_command(b, 9001, 9000, host="0.0.0.0")[3:7] == ["-p", "9000:8500", "-p", "9001:8501"]


def test_model_server_command_uses_a_rebased_config(tmp_path):
    b = fake_bundle(tmp_path / "b")
    local = tmp_path / "models.config"
    local.write_text(config.rebase_models_config((b / "models.config").read_text(), "/models", str(b)))
    assert config.served_models(local.read_text())[0]["base_path"] == f"{b}/tfserving/dense"
    cmd = model_server_command("/usr/bin/tensorflow_model_server", b, local, 8501, 8500)
    assert cmd == ["/usr/bin/tensorflow_model_server", "--port=8500", "--rest_api_port=8501",
                   f"--model_config_file={local}", "--enable_batching=true",
                   f"--batching_parameters_file={b / 'batching.config'}",
                   f"--monitoring_config_file={b / 'monitoring.config'}"]


def test_serve_runs_tensorflow_model_server_when_installed(tmp_path):
    """TF Serving can't be installed here: a stand-in `tensorflow_model_server` on PATH prints
    the arguments and the models.config it was given, which must point into the real bundle."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT
    b = fake_bundle(tmp_path / "b")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tensorflow_model_server"
    fake.write_text('#!/bin/sh\necho "args: $*"\nfor a in "$@"; do case "$a" in --model_config_file=*) '
                    'cat "${a#--model_config_file=}";; esac; done\nexit 3\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    # the wrapper process waits on the server without TensorFlow in it (~650 MB it would hold for nothing)
    code = ("import sys\nfrom export.cli.app import main\nrc = main(sys.argv[1:])\n"
            "print('TENSORFLOW', 'tensorflow' in sys.modules)\nsys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code, "serve", str(b), "--rest-port", "9501", "--grpc-port", "9500"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 3, r.stderr  # the server's own exit status
    assert r.stdout.endswith("TENSORFLOW False\n")
    assert f"$ {fake} --port=9500 --rest_api_port=9501 --model_config_file=" in r.stdout
    assert f"--batching_parameters_file={b}/batching.config --monitoring_config_file={b}/monitoring.config" in r.stdout
    assert f'base_path: "{b}/tfserving/dense"' in r.stdout
    assert "docker run" not in r.stdout
