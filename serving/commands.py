"""`resnet-deploy serve | predict | status | metadata`: argument parsing and the handlers.

`serve` runs TF Serving when `tensorflow_model_server` is installed, otherwise prints the
`docker run ... tensorflow/serving` command for the bundle and starts the local server on the
same ports. The client commands talk to either through TF Serving's REST or gRPC API.
Importing this module is cheap (argparse only); the handlers import what they need.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from export.core.argtypes import int_at_least
from export.core.errors import BundleError, ServingError, UsageError
from export.core.registry import FORMATS
from export.deploy.tfserving_flags import GRPC_PORT, REST_PORT

#: The TF Serving image and the ports it listens on inside the container.
TF_SERVING_IMAGE = "tensorflow/serving"
CONTAINER_GRPC_PORT, CONTAINER_REST_PORT = GRPC_PORT, REST_PORT


_positive = int_at_least(1)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0 = any free port), got {value}")
    return value


def _backend(text: str) -> str:
    kind, _, setting = text.partition(":")
    if kind not in FORMATS:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(FORMATS)} (with :PRECISION), got {text!r}")
    if FORMATS[kind].precision_hints:  # OpenVINO: a runner hint, the int8 IR, or both (int8-bf16)
        from export.core.errors import BundleError
        from serving.backends.registry import backend_choice
        try:
            backend_choice(kind, setting)
        except BundleError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add the serving subcommands to the `resnet-deploy` subparsers and `commands` table."""
    s = sub.add_parser("serve", help="serve a bundle with TF Serving (or the local compatible server)")
    s.add_argument("bundle", metavar="BUNDLE", help="a bundle directory or its .tar.gz")
    s.add_argument("--rest-port", type=_port, default=8501)
    s.add_argument("--grpc-port", type=_port, default=8500)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--backend", type=_backend, default="savedmodel",
                   help="local server only: savedmodel | onnx | tflite[:fp32|fp16|dynamic|int8] | "
                        "openvino[:f32|bf16|int8|int8-bf16] (bf16 needs AMX-BF16 or AVX512-BF16; int8 is the "
                        "NNCF int8 IR)")
    s.add_argument("--local", action="store_true", help="use the local server even if TF Serving is installed")
    s.add_argument("--no-batching", action="store_true", help="local server: run each request on its own")
    s.add_argument("--model", action="append", default=None, metavar="NAME",
                   help="local server: serve only this model of the bundle (repeatable; default all)")
    s.add_argument("--max-body-bytes", type=_positive, default=32 << 20, help="local server: largest request body (bytes)")
    commands["serve"] = cmd_serve

    def client_args(p):
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--rest", metavar="URL", help="REST API, e.g. http://127.0.0.1:8501")
        where.add_argument("--grpc", metavar="HOST:PORT", help="gRPC API, e.g. 127.0.0.1:8500")
        p.add_argument("--model", required=True, help="model name (the variant)")
        which = p.add_mutually_exclusive_group()
        which.add_argument("--version", type=_positive)
        which.add_argument("--label", help="a version label, e.g. stable")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
        p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("predict", help="classify image files with a served model")
    client_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--pixels", action="store_true",
                   help="decode here and send pixels to serving_default (default: send the files "
                        "as b64 to predict_image_bytes)")
    p.add_argument("--aspect", choices=("stretch", "center_crop"), default="stretch",
                   help="with --pixels: the model's image contract aspect policy (the bundle's manifest, "
                        "variants.<model>.image.aspect; default stretch)")
    p.add_argument("--labels", metavar="labels.txt",
                   help="class names, one a line (e.g. the bundle's tflite/<variant>/labels.txt)")
    p.add_argument("--top-k", type=_positive, default=5)
    p.add_argument("--batch", type=_positive, default=8, help="images per request (keep <= max_batch_size)")
    commands["predict"] = cmd_predict

    p = sub.add_parser("status", help="a served model's versions and their state")
    client_args(p)
    commands["status"] = cmd_status

    p = sub.add_parser("metadata", help="a served model's signatures")
    client_args(p)
    commands["metadata"] = cmd_metadata


# -- serve ------------------------------------------------------------------------------------

def bundle_dir(path: str | Path, workdir: Path | None = None) -> Path:
    """The bundle directory for `path`: itself, the directory beside a `.tar.gz` when it holds
    exactly the tarball's files (names, sizes and sha256: it was packed from it and not changed
    since), or else the archive unpacked (with export.bundle.packing's checks) into `workdir`."""
    p = Path(path)
    if p.is_dir():
        if not ((p / "models.config").is_file() or (p / "tfserving").is_dir()):
            raise BundleError(f"{p} is not a bundle: no models.config and no tfserving/ directory")
        return p.resolve()
    if not p.exists():
        raise BundleError(f"no such bundle: {p} (run `make export` first, or give a bundle directory)")
    if not p.name.endswith((".tar.gz", ".tgz")):
        raise BundleError(f"{p} is neither a bundle directory nor a .tar.gz bundle")
    beside = p.with_name(p.name.removesuffix(".tar.gz").removesuffix(".tgz"))
    differs = _differs_from_tarball(beside, p) if (beside / "models.config").is_file() else "absent"
    if differs is None:
        return beside.resolve()
    if workdir is None:
        raise BundleError(f"{p} must be unpacked first" if differs == "absent" else
                          f"{beside} is not what {p} holds ({differs}); serve the directory itself, "
                          "or remove it so the tarball is unpacked")
    from export.bundle.packing import unpack  # refuses absolute paths, `..`, outside links, devices
    root = unpack(p, workdir)
    if not (root / "models.config").is_file():
        raise BundleError(f"{p} holds no models.config: not a bundle")
    return root.resolve()


def _differs_from_tarball(root: Path, tar_path: Path) -> str | None:
    """None when the directory `root` holds exactly the files of the bundle tarball `tar_path`
    (names, sizes, sha256; read in one pass over the archive), else the first difference."""
    import hashlib
    import tarfile
    from pathlib import PurePosixPath

    from export.core.atomic import sha256_file
    seen: set[str] = set()
    try:
        with tarfile.open(tar_path, "r|*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or len(parts) < 2:
                    continue
                if parts[0] != root.name:
                    return f"the tarball holds {parts[0]}/, not {root.name}/"
                rel = "/".join(parts[1:])
                seen.add(rel)
                local = root / rel
                if not local.is_file() or local.stat().st_size != member.size:
                    return f"{rel} differs"
                digest, data = hashlib.sha256(), tar.extractfile(member)
                assert data is not None
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
                if digest.hexdigest() != sha256_file(local):
                    return f"{rel} differs"
    except (tarfile.TarError, OSError) as e:
        raise BundleError(f"cannot read {tar_path}: {e}") from None
    extra = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                   and p.relative_to(root).as_posix() not in seen)
    return f"{extra[0]} is not in the tarball" if extra else None


def docker_command(bundle: Path, rest_port: int, grpc_port: int, host: str = "127.0.0.1") -> list[str]:
    """`docker run` for the tensorflow/serving image serving `bundle` (mounted at /models)."""
    from export.deploy.tfserving import DEFAULT_BASE_PREFIX as M
    bind = "" if host in ("0.0.0.0", "") else f"{host}:"
    return ["docker", "run", "--rm", "-p", f"{bind}{grpc_port}:{CONTAINER_GRPC_PORT}",
            "-p", f"{bind}{rest_port}:{CONTAINER_REST_PORT}", "-v", f"{bundle}:{M}:ro", TF_SERVING_IMAGE,
            *_flags(bundle, f"{M}/models.config", M)]


def _flags(bundle: Path, models_config: str, where: str | Path, **ports: int) -> list[str]:
    """model_server_flags for `bundle` with its config files seen at `where`, those it has."""
    from export.deploy.tfserving_flags import model_server_flags

    def seen(name: str) -> str | None:
        return f"{where}/{name}" if (bundle / name).is_file() else None
    return model_server_flags(models_config, seen("batching.config"), seen("monitoring.config"), **ports)


def model_server_command(binary: str, bundle: Path, models_config: Path, rest_port: int, grpc_port: int) -> list[str]:
    """`tensorflow_model_server` serving `bundle` with a models.config rebased onto its real path."""
    return [binary, *_flags(bundle, str(models_config), bundle, grpc_port=grpc_port, rest_port=rest_port)]


def run_forwarding_signals(cmd: list[str]) -> int:
    """Run `cmd` until it exits, passing SIGINT/SIGTERM on to it (TF Serving shuts down
    gracefully on them). Not exec: the temporary models.config must outlive the server."""
    import signal
    import subprocess
    proc = subprocess.Popen(cmd)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: proc.send_signal(signum))
    return proc.wait()


def cmd_serve(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-serve-") as tmp:
        bundle = bundle_dir(args.bundle, Path(tmp))
        if Path(args.bundle).resolve() != bundle:
            print(f"serving the bundle directory {bundle}")
        binary = shutil.which("tensorflow_model_server")
        if binary and not args.local and args.backend == "savedmodel":
            from export.deploy import tfserving as config
            cfg = Path(tmp) / "models.config"
            cfg.write_text(config.rebase_models_config((bundle / "models.config").read_text(),
                                                       config.DEFAULT_BASE_PREFIX, str(bundle)))
            cmd = model_server_command(binary, bundle, cfg, args.rest_port, args.grpc_port)
            if args.host != "127.0.0.1":
                print(f"note: tensorflow_model_server listens on all interfaces; --host {args.host} is not used")
            print("$ " + shlex.join(cmd), flush=True)
            return run_forwarding_signals(cmd)
        print("To serve this bundle with TF Serving (production):")
        print("  " + shlex.join(docker_command(bundle, args.rest_port, args.grpc_port, args.host)))
        reason = "--local given" if args.local else (
            f"--backend {args.backend}" if args.backend != "savedmodel" else "tensorflow_model_server is not installed here")
        print(f"{reason}: starting the local TF Serving-compatible server (serving/frontends/server.py) on the same "
              f"ports instead; Ctrl-C or SIGTERM stops it.", flush=True)
        # Only the local server's SavedModel backend imports TensorFlow, once the bundle and --model check
        # out (serving.backends.registry): the process that runs tensorflow_model_server above holds none
        # of it (~650 MB) while it waits, and the ONNX, TFLite and OpenVINO backends start without it (TF
        # Serving's protos load alone: serving.api.tf_protos).
        from serving.frontends.server import serve
        return serve(bundle, rest_port=args.rest_port, grpc_port=args.grpc_port, host=args.host,
                     backend=args.backend, batching=not args.no_batching, max_body_bytes=args.max_body_bytes,
                     models=args.model)


# -- clients ----------------------------------------------------------------------------------

def _client(args: argparse.Namespace):
    from serving.client.clients import GrpcClient, RestClient
    if args.rest:
        return RestClient(args.rest, timeout=args.timeout)
    if ":" not in args.grpc:
        raise UsageError(f"--grpc needs HOST:PORT, got {args.grpc!r}")
    return GrpcClient(args.grpc, timeout=args.timeout)  # TF Serving's protos without TensorFlow (serving.api.tf_protos)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        doc = c.status(args.model, args.version, args.label)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    for v in doc.get("model_version_status", []):
        err = v.get("status", {})
        extra = "" if err.get("error_code", "OK") == "OK" else f" ({err.get('error_code')}: {err.get('error_message')})"
        print(f"{args.model} version {v['version']}: {v['state']}{extra}")
    return 0


def cmd_metadata(args: argparse.Namespace) -> int:
    with _client(args) as c:
        doc = c.metadata(args.model, args.version, args.label)
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    spec = doc["model_spec"]
    print(f"{spec['name']} version {spec['version']}")
    for name, sig in doc["metadata"]["signature_def"]["signature_def"].items():
        if name.startswith("__"):
            continue

        def fmt(group, sig=sig):
            return ", ".join(
                f"{k} {v['dtype']}[{','.join(d['size'] for d in v['tensor_shape'].get('dim', []))}]"
                for k, v in sorted(sig.get(group, {}).items()))
        print(f"  {name}: {fmt('inputs')} -> {fmt('outputs')}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from serving.client import clients as cl
    labels = cl.read_labels(args.labels)
    results = []
    with _client(args) as c:
        if args.pixels:
            size = cl.input_size(c.metadata(args.model, args.version, args.label))
        for start in range(0, len(args.images), args.batch):
            paths = args.images[start:start + args.batch]
            if args.pixels:
                outputs = c.predict(args.model, {"image": cl.load_pixels(paths, size, args.aspect)}, cl.DEFAULT_SIGNATURE,
                                    args.version, args.label)
            else:
                outputs = c.predict(args.model, {"image_bytes": cl.read_image_bytes(paths)},
                                    cl.IMAGE_BYTES_SIGNATURE, args.version, args.label)
            if "probabilities" not in outputs:
                raise ServingError(f"the model answered {sorted(outputs)}, not 'probabilities'")
            for path, row in zip(paths, np.asarray(outputs["probabilities"]), strict=False):
                results.append({"image": path, "top_k": cl.top_k(row, args.top_k, labels)})
    if args.json:
        print(json.dumps({"model": args.model, "signature": cl.DEFAULT_SIGNATURE if args.pixels
                          else cl.IMAGE_BYTES_SIGNATURE, "predictions": results}, indent=2))
        return 0
    for r in results:
        print(r["image"])
        for rank, t in enumerate(r["top_k"], 1):
            print(f"  {rank}. {t['label']:<24s} {t['probability']:.4f}")
    return 0
