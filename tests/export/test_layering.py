"""The layering rules of design.md, read from the source: serving/ may import export/, never
the reverse (only the console entry point imports both); no import cycles between modules;
export/formats/* never import each other; export/runtimes/* never import export/formats/*."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("export", "serving")
ENTRY_POINT = "export.cli"  # the console script: the one module allowed to import both sides


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports, at any depth (function-level imports count too),
    except those only imported for type checking."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()

    def resolve(name: str) -> str | None:  # the longest project module that `name` is or is inside
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    type_checking_blocks = [n for n in ast.walk(tree) if isinstance(n, ast.If)
                            and getattr(n.test, "id", getattr(n.test, "attr", None)) == "TYPE_CHECKING"]
    skip = {id(c) for block in type_checking_blocks for c in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for n in names:
            target = resolve(n)
            if target and target != _module_name(path):
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, modules) for p in files}
    # A package's __init__ being imported on the way to a submodule is not a dependency edge.
    return {m: {t for t in deps if not m.startswith(t + ".")} for m, deps in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def _rooms(graph: dict[str, set[str]], prefix: str) -> set[str]:
    return {m for m in graph if m == prefix or m.startswith(prefix + ".")}


def _violations(graph: dict[str, set[str]], rules: list[tuple[str, str, str]]) -> list[str]:
    """Every import that breaks a rule: (importer room, forbidden room, why)."""
    out = []
    for src, dst, why in rules:
        for m in sorted(_rooms(graph, src)):
            # "pkg." names the package's modules only; "pkg" the package itself as well.
            bad = sorted(t for t in graph[m] if t.startswith(dst) if dst.endswith(".") or t == dst or t.startswith(dst + "."))
            if bad:
                out.append(f"{m} imports {', '.join(bad)}: {why}")
    return out


#: The doors between rooms (design.md, Layout). Each line: importer, forbidden target, reason.
RULES = [
    ("export.formats", "export.quality", "exporters write files; judging them is quality's job"),
    ("export.formats", "export.pipeline", "exporters are called by the pipeline, not the reverse"),
    ("export.runtimes", "export.formats.", "runtimes run files, they never make them (the Artifact record is shared)"),
    ("export.quality", "export.pipeline", "quality judges artifacts; the pipeline calls it"),
    ("export.quality", "export.bench", "quality never depends on timings"),
    ("export.core", "export.model", "core is the bottom layer"),
    ("export.model", "export.formats", "the model is built before any format exists"),
    ("export.bundle", "export.pipeline", "the bundle is written by the pipeline, not the reverse"),
    ("export.deploy", "export.pipeline", "deployment files are written for the pipeline"),
    ("serving.api", "serving.frontends", "both front ends share the API; it knows neither"),
    ("serving.backends", "serving.frontends", "backends run models for whichever front end asks"),
    ("serving.client", "serving.backends", "a client talks to a server over the wire, never to its insides"),
    ("serving.client", "serving.frontends", "a client talks to a server over the wire, never to its insides"),
    ("serving.scoring", "serving.frontends", "Beam scoring runs the artifacts itself, not through the server"),
] + [(room, "export.cli", "only the entry point sits on top") for room in (
    "export.core", "export.model", "export.images", "export.training", "export.formats", "export.runtimes",
    "export.quality", "export.bundle", "export.pipeline", "export.bench", "export.deploy")]


def test_export_never_imports_serving():
    """Only export.cli (the console entry point) imports both sides."""
    wrong = {m: sorted(t for t in deps if t.split(".")[0] == "serving")
             for m, deps in import_graph().items() if m.startswith("export") and not m.startswith(ENTRY_POINT)}
    assert {m: d for m, d in wrong.items() if d} == {}


def test_rooms_keep_their_doors():
    assert _violations(import_graph(), RULES) == []


def test_exporters_never_import_each_other():
    """One module per format; what they share lives in export/formats/__init__.py (and the ONNX
    quantizer, which only the ONNX exporter uses)."""
    graph = import_graph()
    exporters = {f"export.formats.{f}" for f in ("savedmodel", "tflite", "onnx", "openvino")}
    for m in exporters:
        assert not (graph[m] & exporters), f"{m} imports another format module: {graph[m] & exporters}"


def test_core_imports_only_core():
    """core is the bottom layer: errors, files, locks, the registry; it names other rooms' modules
    by dotted path only (the registry imports exporters and runners on first use)."""
    graph = import_graph()
    wrong = {m: sorted(t for t in graph[m] if not (t.startswith("export.core") or t == "export"))
             for m in _rooms(graph, "export.core")}
    assert {m: d for m, d in wrong.items() if d} == {}


def test_images_imports_only_core():
    """The image contract is the bottom of every path: clients and Beam workers load it without
    the rest of the project."""
    graph = import_graph()
    wrong = {m: sorted(t for t in graph[m] if not (t.startswith("export.images") or t.startswith("export.core")
                                                     or t == "export"))
             for m in _rooms(graph, "export.images")}
    assert {m: d for m, d in wrong.items() if d} == {}


def test_the_checks_can_fail(tmp_path):
    """The cycle finder sees a planted cycle and the door check a planted import, so an empty
    answer above means something."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    planted = {"export.quality.parity": {"export.pipeline.run"}, "export.pipeline.run": set()}
    assert _violations(planted, RULES) == [
        "export.quality.parity imports export.pipeline.run: quality judges artifacts; the pipeline calls it"]
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import serving.core\n"
                   "def f():\n    from serving import tensors\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert _imports(src, {"serving.core", "serving.tensors", "serving"}) == {"serving", "serving.tensors"}
    finally:
        ROOT = saved
