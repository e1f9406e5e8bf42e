"""`resnet-deploy bundle | sign | verify`: `make export`'s bundle run; who made a bundle, that nothing
changed since, and how it compares with another export of the same commit.

`sign` writes the bundle's signature.sig with an offline model-signing signer (EC key, or key +
certificate + CA chain) and re-packs its .tar.gz so the tarball carries it. `verify` checks, in
this order, the signature (when given --public-key or --certificate-chain), the files against
manifest.json, the CycloneDX BOM (it validates, its model hashes equal the manifest's), the parity
from the golden files (not run when the signature, a checksum or the BOM failed, so no possibly
altered SavedModel is loaded), and with --against the per-file difference to another bundle.
"""
from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path


def add_parsers(sub, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add `bundle`, `sign` and `verify` to the `resnet-deploy` subparsers and the `commands` table."""
    s = sub.add_parser("bundle", help="build, export, check parity and publish deployment bundles (make export)")
    s.add_argument("--config", default="configs/variants.toml")
    s.add_argument("--out", default="dist")
    s.add_argument("--weights", default=None, help="override the config's weights for every variant")
    s.add_argument("--runs", default="runs", metavar="DIR",
                   help="training runs of variants with `data` (reused while data, settings and weights match)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--wait", action="store_true", help="wait for another run on the same --out instead of refusing")
    s.add_argument("--skip-file-parity", action="store_true",
                   help="skip the end-to-end parity from encoded files (server, classify, score, MediaPipe)")
    add_signing_arguments(s, required=False)
    commands["bundle"] = cmd_bundle

    s = sub.add_parser("sign", help="sign every file of a bundle (model-signing, offline: EC key or certificate)")
    s.add_argument("bundle", metavar="BUNDLE",
                   help="dist/<name>-<version> (its .tar.gz, if any, is re-packed with the signature)")
    add_signing_arguments(s, required=True)
    commands["sign"] = cmd_sign

    s = sub.add_parser("verify", help="check a bundle: signature, checksums against its manifest, parity "
                                      "from its golden files; --against: per-file difference to another bundle")
    s.add_argument("bundle", metavar="BUNDLE", help="dist/<name>-<version> or its .tar.gz")
    trust = s.add_mutually_exclusive_group()
    trust.add_argument("--public-key", metavar="PUB.pem", type=Path,
                       help="check the signature with the publisher's EC public key")
    trust.add_argument("--certificate-chain", metavar="CA.pem", type=Path, action="append",
                       help="check the signature's certificate against these CA certificates (repeatable)")
    s.add_argument("--against", metavar="OTHER", help="compare every file with another bundle (dir or .tar.gz) "
                                                      "of the same commit, config and weights")
    s.add_argument("--skip-parity", action="store_true", help="check signature and checksums only")
    commands["verify"] = cmd_verify


def add_signing_arguments(p: argparse.ArgumentParser, required: bool) -> None:
    """--private-key (or --signing-key), --certificate, --certificate-chain: shared by sign and bundle."""
    names = ["--private-key"] if required else ["--signing-key", "--private-key"]
    p.add_argument(*names, dest="private_key", metavar="KEY.pem", type=Path, required=required,
                   help="EC private key (PEM) to sign with" + ("" if required else " on publish"))
    p.add_argument("--certificate", metavar="LEAF.pem", type=Path,
                   help="the key's signing certificate (with --certificate-chain: sign with the certificate)")
    p.add_argument("--certificate-chain", dest="chain", metavar="CA.pem", type=Path, action="append", default=[],
                   help="intermediate/root CA certificates that issued --certificate (repeatable)")


def signing_key(args: argparse.Namespace):
    """The checked SigningKey of --private-key/--certificate/--certificate-chain, or None without a key."""
    from export.bundle.signing import SigningKey
    from export.core.errors import SigningError
    if args.private_key is None:
        if args.certificate or args.chain:
            raise SigningError("--certificate and --certificate-chain need --signing-key KEY.pem")
        return None
    return SigningKey(args.private_key, args.certificate, tuple(args.chain)).check()


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign a bundle directory under its parent's lock, then re-pack its tarball if it has one."""
    from export.bundle import packing, signing
    from export.core.errors import BundleError
    from export.core.locks import exclusive_output
    root = Path(args.bundle)
    if not root.is_dir():
        raise BundleError(f"{root} is not a bundle directory; sign dist/<name>-<version> (its .tar.gz is re-packed)")
    key = signing_key(args)
    with exclusive_output(root.resolve().parent, command=f"resnet-deploy sign {root.name}"):
        path = key.sign(root)
        print(f"signed {root} ({signing.describe(root)}): {path}")
        tar = root.with_name(root.name + ".tar.gz")
        if tar.is_file():
            tar, digest = packing.pack(root)
            print(f"re-packed {tar} with the signature (sha256 {digest})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Signature (if asked), files, parity (unless skipped, or the signature or a checksum failed:
    an altered SavedModel is never loaded), --against; 0 or 1."""
    from export.bundle import layout as bundle
    from export.bundle import packing, signing
    from export.quality import golden, parity
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-verify.") as scratch:
        root = packing.open_bundle(Path(args.bundle), Path(scratch) / "this")
        signature_ok = True
        if args.public_key or args.certificate_chain:
            check = signing.verify_signature(root, args.public_key, args.certificate_chain or ())
            signature_ok = bool(check)
            print(f"signature: {check.message}" if check
                  else f"FAIL signature ({check.verdict.value}): {check.message}")
        else:
            who = signing.describe(root)
            print(f"signature: {who} (not checked: pass --public-key or --certificate-chain)" if who
                  else "signature: none (unsigned bundle)")
        files, manifest = bundle.verify_dir(root)
        for problem in files.problems():
            print(f"FAIL {problem}")
        print(f"files: {files.checked} in manifest, {len(files.changed)} changed, {len(files.missing)} missing, "
              f"{len(files.extra)} extra")
        from export.bundle import bom
        bom_problems, bom_summary = bom.check(root, manifest.artifacts)  # validates; hashes equal the manifest's
        for problem in bom_problems:
            print(f"FAIL {problem}")
        print(bom_summary)
        ok = signature_ok and bool(files) and not bom_problems
        if args.skip_parity:
            pass
        elif not signature_ok:
            print("parity: skipped: the signature failed, so the artifacts are not loaded")
        elif not files:
            print("parity: skipped: files differ from manifest.json, so the artifacts are not loaded")
        else:
            from export import import_tensorflow_quietly
            import_tensorflow_quietly()  # only here: a refused tarball or a failed checksum never waits for it
            present = [a for a in manifest.artifacts if (root / a.path).exists()]
            goldens = {v: golden.load(root, v) for v in sorted({a.variant for a in present})}
            report = parity.run_suite(root, present, goldens)
            print(report.to_markdown())
            ok = ok and bool(report)
        if args.against:
            ok = _against(root, args.against, Path(scratch) / "other") and ok
        print("verified" if ok else "verification FAILED")
    return 0 if ok else 1


def _against(root: Path, other_arg: str, scratch: Path) -> bool:
    """Print the per-file comparison with OTHER; True when every difference is an expected one."""
    from export.bundle import layout as bundle
    from export.bundle import packing, reproducibility
    other = packing.open_bundle(Path(other_arg), scratch)
    bundle.read_manifest(other)  # a clear error when OTHER is no bundle
    diffs = reproducibility.compare(root, other)
    print(reproducibility.render(diffs, other_arg))
    return all(d.ok for d in diffs)


def cmd_bundle(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from export.cli.file_parity import bundle_hook
    from export.cli.model import print_json
    from export.pipeline.run import run_bundle
    result = run_bundle(args.config, args.out, weights=args.weights, quiet=args.json, signer=signing_key(args),
                        wait=args.wait, runs=args.runs, file_parity=None if args.skip_file_parity else bundle_hook)
    if args.json:
        print_json({k: v for k, v in result.items() if k not in ("report", "artifacts")})
        return 0 if result["published"] else 1
    console = Console()
    if not result["published"]:
        console.print(f"[red]parity failed[/red]: bundle NOT published; report: {result['report']}")
        for failure in result["failures"][:20]:
            console.print(f"  - {failure}")
        return 1
    table = Table(title=f"bundle {result['bundle']} ({result['seconds']} s)")
    for col in ("variant", "format", "precision", "size", "export s", "parity"):
        table.add_column(col, justify="right" if col in ("size", "export s") else "left")
    verdicts: dict[str, list[str]] = {}
    for r in result["report"].results:  # the CPU row first, then any GPU row ("GPU skipped") or hint row
        where = " ".join(w for w in (r.device_requested if r.device_requested != "CPU" else "",
                                     r.precision_hint) if w)
        verdicts.setdefault(r.key, []).append(f"{where} {r.status}".strip())
    for a in result["artifacts"]:
        table.add_row(a.variant, a.format, a.precision, f"{a.bytes / 1e6:.1f} MB", f"{a.seconds:.1f}",
                      ", ".join(verdicts.get(a.key, ["n/a"])))
    console.print(table)
    console.print(f"tarball {result['tarball']}\nsha256  {result['sha256']}")
    console.print(time_line(result["run"]), soft_wrap=True)
    return 0


def time_line(run: dict) -> str:
    """What `make export` took, training and export apart (setup says its own time in make setup):
    `time: training 132 s (dense, conv trained; dropout cached; the last 90 s beside the export),
    export 210 s (CPU 356 s, 1.7 per wall s)`. The export's time starts with its first task."""
    training = run.get("training", {})
    runs = training.get("runs", {})
    trained = [name for name, r in runs.items() if not r.get("cached")]
    cached = [name for name, r in runs.items() if r.get("cached")]
    beside = training.get("beside_export_s", 0.0)
    which = "; ".join(part for part in (f"{', '.join(trained)} trained" if trained else "",
                                        f"{', '.join(cached)} cached" if cached else "",
                                        f"the last {beside:.0f} s beside the export" if beside >= 1 else "") if part)
    training = f"training {training.get('wall_s', 0.0):.0f} s ({which})" if runs else "no training"
    return (f"time: {training}, export {run['wall_s']:.0f} s (CPU {run['cpu_s']:.0f} s, "
            f"{run['cpu_per_wall']} per wall s)")
