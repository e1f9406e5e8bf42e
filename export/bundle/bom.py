"""bom.cdx.json: the bundle's CycloneDX 1.6 bill of materials, written with cyclonedx-python-lib and
checked with its JSON schema validator (strict: no unknown properties), at export and by `verify`.

It holds one `machine-learning-model` component per artifact (its SHA-256 is the manifest's; format,
precision and path as properties; a `modelCard`), a `data` component per training and eval set,
the Python packages that made the bundle (versions from requirements.lock) and the dependency
graph between them. cyclonedx-python-lib 11.12 does not model `modelCard` yet, so the cards are
added to its JSON output before the whole document is validated against the 1.6 schema.
"""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from export.bundle.documents import BundleDocs

SPEC_VERSION = "1.6"
#: Properties of a model component (CycloneDX has no fields for them); the namespace is the tool's.
PROP_KEY, PROP_FORMAT, PROP_PRECISION, PROP_PATH = ("resnet-deploy:artifact", "resnet-deploy:format",
                                                    "resnet-deploy:precision", "resnet-deploy:path")
#: The packages that wrote each format (each model component depends on them in the graph).
FORMAT_PACKAGES = {"savedmodel": ("tensorflow", "keras"), "tflite": ("tensorflow", "ai-edge-litert", "ai-edge-quantizer"),
                   "onnx": ("tf2onnx", "onnx", "onnxruntime"), "openvino": ("openvino",)}
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def locked_packages(lock_path: Path | None = None) -> tuple[dict[str, tuple[str, str]], str]:
    """{canonical name: (name, version)} from requirements.lock, or from the installed distributions
    when the tool was installed without its lock file; and which of the two it was."""
    path = lock_path or LOCK_FILE
    if path.is_file():
        pins = {}
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = (x.strip() for x in line.split("==", 1))
                pins[_canonical(name)] = (name, version)
        return pins, path.name
    from importlib.metadata import distributions
    return ({_canonical(d.metadata["Name"]): (d.metadata["Name"], d.version) for d in distributions()
             if d.metadata["Name"]}, "installed distributions")


def _requires(name: str, pins: dict[str, tuple[str, str]]) -> list[str]:
    """The locked packages `name` requires (its installed metadata; markers evaluated, extras left out)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import InvalidRequirement, Requirement
    try:
        reqs = requires(name) or []
    except PackageNotFoundError:
        return []
    out = set()
    for text in reqs:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if _canonical(req.name) in pins and _canonical(req.name) != _canonical(name):
            out.add(_canonical(req.name))
    return sorted(out)


def _closure(pins: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The locked packages resnet-deploy needs to run (its requirements and theirs, not the test and lint
    tools); all of them when the tool's own metadata cannot be read."""
    todo, seen = _requires("resnet-deploy", pins), set()
    while todo:
        key = todo.pop()
        if key not in seen:
            seen.add(key)
            todo += _requires(pins[key][0], pins)
    return {k: v for k, v in pins.items() if k in seen} if seen else pins


def _plain(text: str) -> str:
    """The card's inline Markdown as plain text, for the BOM."""
    return text.replace("**", "").replace("`", "")


def _model_card(docs: BundleDocs, art: dict[str, Any], data_refs: list[str], view: dict[str, Any]) -> dict[str, Any]:
    """The CycloneDX modelCard of one artifact: parameters, its eval-set metrics, considerations."""
    variant = docs.variants[art["variant"]]
    metrics = []
    ev = view.get("evaluation")
    key = f"{art['variant']}/{art['format']}_{art['precision']}"
    row = next((r for r in (ev or {}).get("artifacts", []) if r["label"] == key), None)
    if ev and row:
        source = ev["eval_set"].get("source", "eval set")
        metric: dict[str, Any] = {"type": "top-1 accuracy", "value": f"{row['accuracy']:.4f}", "slice": source}
        if row["ci_values"]:
            lo, hi = row["ci_values"]
            metric["confidenceInterval"] = {"lowerBound": f"{lo:.4f}", "upperBound": f"{hi:.4f}"}
        metrics.append(metric)
        metrics.append({"type": "accuracy drop from the Keras reference (points)", "value": f"{row['drop']:.2f}",
                        "slice": source})
        metrics += [{"type": "top-1 accuracy", "value": f"{pc['accuracy']:.4f}", "slice": f"{source}, class {name}"}
                    for name, pc in row["per_class"].items()]
    training = variant.get("training") or {}
    if training.get("val_accuracy") is not None:
        metrics.append({"type": "validation accuracy (training run, Keras)",
                        "value": f"{training['val_accuracy']:.4f}", "slice": f"validation split of {training.get('data')}"})
    tradeoffs = [f"{q['label']}: logits max abs error {q['max_abs']:.3g}, top-1 agreement {q['top1']:.3f} "
                 "with the Keras reference" for q in view["quantization"]
                 if q["label"].split(" @ ")[0] == key and q["max_abs"] is not None and q["top1"] is not None]
    labels = variant.get("labels") or []
    card: dict[str, Any] = {
        "bom-ref": f"model-card:{key}",
        "modelParameters": {"approach": {"type": "supervised"}, "task": "image classification",
                            "architectureFamily": "residual neural network",
                            "modelArchitecture": f"ResNet-50 with the {art['variant']} head",
                            "datasets": [{"ref": r} for r in data_refs],
                            "inputs": [{"format": "image"}],
                            "outputs": [{"format": f"logits and probabilities over {len(labels)} classes"}]},
        "considerations": {"useCases": [_plain(view["intended_use"])],
                           "technicalLimitations": [_plain(x) for x in view["limits"]] or ["none recorded"],
                           **({"performanceTradeoffs": tradeoffs} if tradeoffs else {})},
        "properties": [{"name": "resnet-deploy:out-of-scope", "value": _plain(x)} for x in view["out_of_scope"]],
    }
    if metrics:
        card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    return card


def _data_components(docs: BundleDocs) -> tuple[list[Any], dict[str, list[str]]]:
    """The `data` components (training and eval sets, one per distinct sha256), and per variant their refs."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.component import Component, ComponentType
    comps: dict[str, Any] = {}
    refs: dict[str, list[str]] = {}
    for name, v in docs.variants.items():
        sets = []
        t = v.get("training") or {}
        if t.get("data_sha256"):
            sets.append(("training data", str(t.get("data")), t["data_sha256"], t.get("images_per_class") or {}))
        ev = (docs.accuracy_section(name) or {}).get("eval_set") or {}
        if ev.get("sha256"):
            sets.append(("eval set", str(ev.get("source")), ev["sha256"], ev.get("images_per_class") or {}))
        for role, source, digest, per_class in sets:
            ref = f"data:{role.replace(' ', '-')}:{digest[:16]}"
            refs.setdefault(name, []).append(ref)
            if ref not in comps:
                comps[ref] = Component(
                    type=ComponentType.DATA, name=source, bom_ref=ref, description=f"{role}: {sum(per_class.values())} images",
                    hashes=[HashType(alg=HashAlgorithm.SHA_256, content=digest)],
                    properties=[Property(name="resnet-deploy:role", value=role),
                                Property(name="resnet-deploy:sha256-of", value="the image files' relative paths and bytes"),
                                *(Property(name=f"resnet-deploy:images:{c}", value=str(n)) for c, n in per_class.items())])
    return list(comps.values()), refs


def build(docs: BundleDocs, lock_path: Path | None = None) -> dict[str, Any]:
    """The BOM as a JSON object (cyclonedx-python-lib's 1.6 output plus the model cards)."""
    from cyclonedx.factory.license import LicenseFactory
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    from export import __version__
    from export.bundle.card import variant_cards
    m = docs.manifest
    pins, pins_from = locked_packages(lock_path)
    created = m.get("created_at")
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, "resnet-deploy:" + docs.bundle_name + ":" + ",".join(
        sorted(a["sha256"] for a in docs.artifacts()))))
    bom.metadata.timestamp = datetime.fromisoformat(created) if created else datetime.now(UTC)
    root = Component(type=ComponentType.APPLICATION, name=docs.bundle_name, version=str(m["version"]), bom_ref="bundle",
                     description="resnet-deploy deployment bundle",
                     properties=[Property(name="resnet-deploy:package-versions-from", value=pins_from)])
    bom.metadata.component = root
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="resnet-deploy", version=__version__))
    pins = _closure(pins)
    packages = {key: Component(type=ComponentType.LIBRARY, name=name, version=version, bom_ref=f"pypi:{key}",
                               purl=PackageURL(type="pypi", name=key, version=version)) for key, (name, version) in pins.items()}
    data, data_refs = _data_components(docs)
    views = {c["name"]: c for c in variant_cards(docs)}
    licence = (docs.card.get("license") or "unspecified")
    licenses = [] if licence == "unspecified" else [LicenseFactory().make_from_string(licence)]
    models, cards = [], {}
    for a in docs.artifacts():
        key = f"{a['variant']}/{a['format']}_{a['precision']}"
        models.append(Component(
            type=ComponentType.MACHINE_LEARNING_MODEL, name=key, version=str(m["version"]), bom_ref=f"model:{key}",
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=a["sha256"])], licenses=licenses,
            properties=[Property(name=PROP_KEY, value=key), Property(name=PROP_FORMAT, value=a["format"]),
                        Property(name=PROP_PRECISION, value=a["precision"]), Property(name=PROP_PATH, value=a["path"]),
                        Property(name="resnet-deploy:bytes", value=str(a["bytes"]))]))
        cards[f"model:{key}"] = _model_card(docs, a, data_refs.get(a["variant"], []), views[a["variant"]])
    for c in [*packages.values(), *data, *models]:
        bom.components.add(c)
    used = {_canonical(p) for a in docs.artifacts() for p in FORMAT_PACKAGES.get(a["format"], ())} & set(packages)
    bom.register_dependency(root, [*models, *(packages[k] for k in sorted(used))])
    for c, a in zip(models, docs.artifacts(), strict=True):
        needs = [packages[_canonical(p)] for p in FORMAT_PACKAGES.get(a["format"], ()) if _canonical(p) in packages]
        bom.register_dependency(c, [*(d for d in data if str(d.bom_ref) in data_refs.get(a["variant"], [])), *needs])
    for key, comp in packages.items():
        bom.register_dependency(comp, [packages[k] for k in _requires(pins[key][0], pins)])
    for d in data:
        bom.register_dependency(d, [])
    doc = json.loads(JsonV1Dot6(bom).output_as_string())
    for comp in doc.get("components", []):
        if comp.get("bom-ref") in cards:
            comp["modelCard"] = cards[comp["bom-ref"]]
    return doc


def validate_text(text: str) -> list[str]:
    """Every CycloneDX 1.6 (strict) schema error of a BOM's JSON text; [] when it validates."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    return [f"{'/'.join(map(str, e.data.absolute_path)) or '(root)'}: {e.data.message}" for e in (errors or [])]


def write(path: Path, docs: BundleDocs, lock_path: Path | None = None) -> None:
    """Build, validate (a BundleError listing the first errors if it does not) and write the BOM atomically."""
    from export.core.atomic import write_text
    from export.core.errors import BundleError
    text = json.dumps(build(docs, lock_path), indent=2) + "\n"
    errors = validate_text(text)
    if errors:
        raise BundleError(f"{path.name} does not validate against CycloneDX {SPEC_VERSION}: {'; '.join(errors[:3])}")
    write_text(path, text)


def check(root: Path, manifest_artifacts: list[Any]) -> tuple[list[str], str]:
    """`verify`'s BOM check: it validates, and it has one model component per artifact of the manifest
    with the manifest's SHA-256. Returns (problems, a one-line summary)."""
    path = Path(root) / "bom.cdx.json"
    if not path.is_file():
        return [], "bom: none (bundle made before bom.cdx.json)"
    text = path.read_text()
    problems = [f"bom: {e}" for e in validate_text(text)]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return [f"bom: not JSON ({e.msg})"], "bom: FAIL"
    hashes = {}
    for comp in doc.get("components", []):
        if comp.get("type") == "machine-learning-model":
            key = next((p["value"] for p in comp.get("properties", []) if p.get("name") == PROP_KEY), comp.get("name"))
            hashes[key] = next((h["content"] for h in comp.get("hashes", []) if h.get("alg") == "SHA-256"), None)
    for a in manifest_artifacts:
        got = hashes.pop(a.key, None)
        if got is None:
            problems.append(f"bom: no machine-learning-model component for {a.key}")
        elif got != a.sha256:
            problems.append(f"bom: {a.key} has SHA-256 {got[:12]}…, the manifest {a.sha256[:12]}…")
    problems += [f"bom: model component {k} is not in the manifest" for k in sorted(hashes)]
    summary = (f"bom: CycloneDX {doc.get('specVersion')} valid, {len(manifest_artifacts)} model hashes equal the manifest's"
               if not problems else f"bom: FAIL ({len(problems)} problems)")
    return problems, summary
