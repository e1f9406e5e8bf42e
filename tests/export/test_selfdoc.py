"""A bundle that documents itself (issue 26): MODEL_CARD.md, bom.cdx.json and report.html rendered
from planted documents show the planted figures; the BOM validates against CycloneDX 1.6 and its
hashes are the manifest's (and `verify` says so, and fails when they are not); `report` re-renders;
and report.html loads in headless Chromium with no console error, no request and every chart drawn.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest

from export.bundle import bom, card
from export.bundle import layout as bundle
from export.bundle.documents import BundleDocs
from export.bundle.selfdoc import rerender_report
from export.core.errors import UsageError
from tests.export.planted_bundle import plant
from tests.helpers import run_cli, run_main


def _text(html: str) -> str:
    """The page's text: tags dropped (SVG text kept), entities of the figures left as they are."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.unit
def test_card_shows_the_planted_figures(tmp_path):
    p = plant(tmp_path / "b")
    text = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    for figure in ["0.873", "0.961", "**0.914 (training 0.988; planted StandardScaler + LogisticRegression)**",
                   p["data_sha256"], p["eval_sha256"], "accuracy **0.812**",
                   "[0.654, 0.902]", "| `dense/tflite_int8` | 0.688 | [0.521, 0.816] | 12.50 |", "yak 0.429 (6/14)",
                   "| licence | Apache-2.0 |", "| `zebra` | 61 | 43 | 18 |", "| `yak` | 39 | 25 | 14 |",
                   "total 23,591,810, trainable 4,098", "68 training / 32 validation images", "0.04321", "3.21e-06",
                   "one image is 3.1 points", "Class `yak` has low recall in training validation: 0.429",
                   "Planted limitation: never on Tuesdays.", "epochs run: 6 (phase1 4, phase2 2)",
                   "Parity row `dense/tflite_int8 @ GPU:0` was not run (skipped: no GPU).",
                   "| `dense/tflite_int8 @ GPU:0` | int8 | n/a | n/a | n/a | n/a | skipped: no GPU |"]:
        assert figure in text, figure
    # trained on demo data and no [card] text: the default says plainly that it is a demo model
    assert "**A demonstration model, not for real use**" in text and "this is a demo model" in text
    assert "skipped: skipped" not in text


@pytest.mark.unit
def test_report_shows_the_planted_figures_and_is_self_contained(tmp_path):
    plant(tmp_path / "b")
    html = (tmp_path / "b" / "report.html").read_text()
    text = _text(html)
    for figure in ["0.873", "0.914 (training 0.988", "0.812", "4.567", "tflite:int8", "[0.654, 0.902]", "0.688",
                   "[0.521, 0.816]", "12.50",
                   "41.37", "12.89", "×3.21", "Planted CPU 9000", "fastest within the accuracy gate",
                   "REST predict_image_bytes", "0.9876", "0.9543", "0.04321", "3.21e-06", "Apache-2.0"]:
        assert figure in text, figure
    charts = re.findall(r'<figure class="chart" id="([^"]+)">\s*<svg', html)
    assert charts == ["chart-dense-latency", "chart-dense-accuracy", "chart-dense-parity", "chart-dense-training",
                      "chart-dense-confusion"]
    assert "<script" not in html and not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    # the confusion matrix's planted counts are drawn as SVG text
    confusion = html.split('id="chart-dense-confusion"', 1)[1].split("</figure>", 1)[0]
    assert [">17<", ">1<", ">8<", ">6<"] == [t for t in (">17<", ">1<", ">8<", ">6<") if t in confusion]


@pytest.mark.unit
def test_sections_without_their_documents_say_so(tmp_path):
    plant(tmp_path / "b", bench=False, probe=False, end_to_end=False)
    text = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert "Probe baseline" not in text and "0.873" in text
    html = _text((tmp_path / "b" / "report.html").read_text())
    assert "Not benchmarked yet: resnet-deploy bench planted-7" in html
    assert "End-to-end paths" not in html and "41.37" not in html


@pytest.mark.unit
def test_config_card_text_replaces_the_defaults(tmp_path):
    root = tmp_path / "b"
    plant(root)
    docs = BundleDocs.read(root)
    docs.manifest["card"].update(intended_use="Sorting **zebra** from yak photos at the planted zoo.",
                                 out_of_scope=["Horses."])
    text = card.render_markdown(docs)
    assert "Sorting **zebra** from yak photos at the planted zoo." in text and "- Horses." in text
    assert "demonstration model" not in text


@pytest.mark.unit
@pytest.mark.parametrize("table,message", [
    ("[card]\nintended_us = 'x'", "[card] has unknown key 'intended_us'; allowed: ['intended_use', 'limitations', "
                                  "'out_of_scope']"),
    ("[card]\nout_of_scope = 'horses'", "[card] out_of_scope must be a list of non-empty strings, got 'horses'"),
    ("[card]\nintended_use = ''", "[card] intended_use must be a non-empty string, got ''"),
    ("card = 3", "card must be a table ([card]), got 3"),
])
def test_bad_card_config_is_a_one_line_error(tmp_path, table, message):
    from export.pipeline.config import load_config
    cfg = tmp_path / "v.toml"
    cfg.write_text(f"{table}\n[[variants]]\nname = 'dense'\n" if table.startswith("card") else
                   f"[[variants]]\nname = 'dense'\n{table}\n")
    with pytest.raises(UsageError) as e:
        load_config(cfg)
    assert str(e.value) == f"{cfg}: {message}"


@pytest.mark.unit
def test_bom_validates_and_holds_the_manifests_hashes_data_and_locked_packages(tmp_path):
    root = tmp_path / "b"
    p = plant(root)
    text = (root / "bom.cdx.json").read_text()
    assert bom.validate_text(text) == []
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    manifest = bundle.read_manifest(root)
    models = {c["name"]: c for c in doc["components"] if c["type"] == "machine-learning-model"}
    assert {a.key: a.sha256 for a in manifest.artifacts} == {k: c["hashes"][0]["content"] for k, c in models.items()}
    int8 = models["dense/tflite_int8"]
    props = {x["name"]: x["value"] for x in int8["properties"]}
    assert props["resnet-deploy:format"] == "tflite" and props["resnet-deploy:precision"] == "int8"
    metrics = int8["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    assert {"type": "top-1 accuracy", "value": "0.6875", "slice": "validation split of training run dense-abc",
            "confidenceInterval": {"lowerBound": "0.5212", "upperBound": "0.8164"}} in metrics
    assert int8["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    data = {c["bom-ref"]: c for c in doc["components"] if c["type"] == "data"}
    assert {c["hashes"][0]["content"] for c in data.values()} == {p["data_sha256"], p["eval_sha256"]}
    deps = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    assert set(data) <= set(deps["model:dense/tflite_int8"]) and "pypi:tensorflow" in deps["model:dense/tflite_int8"]
    assert set(deps["bundle"]) >= {"model:dense/tflite_fp32", "model:dense/tflite_int8"}
    locked, _ = bom.locked_packages()
    libraries = {c["name"]: c["version"] for c in doc["components"] if c["type"] == "library"}
    for name in ("tensorflow", "jinja2", "cyclonedx-python-lib", "numpy"):
        assert libraries[locked[name][0]] == locked[name][1], name
    assert "pytest" not in libraries and "ruff" not in libraries  # test and lint tools did not make the bundle
    assert "pypi:numpy" in deps["pypi:tensorflow"]
    # the same documents give the same BOM, serial number included
    assert bom.build(BundleDocs.read(root)) == doc


@pytest.mark.unit
def test_bom_check_names_a_changed_hash_a_missing_model_and_schema_errors(tmp_path):
    root = tmp_path / "b"
    plant(root)
    manifest = bundle.read_manifest(root)
    assert bom.check(root, manifest.artifacts) == ([], "bom: CycloneDX 1.6 valid, 2 model hashes equal the manifest's")
    doc = json.loads((root / "bom.cdx.json").read_text())
    model = next(c for c in doc["components"] if c["name"] == "dense/tflite_int8")
    model["hashes"][0]["content"] = "f" * 64
    doc["components"] = [c for c in doc["components"] if c["name"] != "dense/tflite_fp32"]
    doc["metadata"]["colour"] = "blue"
    (root / "bom.cdx.json").write_text(json.dumps(doc))
    problems, summary = bom.check(root, manifest.artifacts)
    assert summary == "bom: FAIL (3 problems)"
    assert any("Additional properties are not allowed ('colour' was unexpected)" in x for x in problems), problems
    assert "bom: dense/tflite_int8 has SHA-256 ffffffffffff…, the manifest " + manifest.artifacts[1].sha256[:12] + "…" \
        in problems
    assert "bom: no machine-learning-model component for dense/tflite_fp32" in problems


@pytest.mark.integration
def test_verify_checks_the_bom(tmp_path):
    root = tmp_path / "planted-7"
    plant(root)
    ok = run_cli("verify", str(root), "--skip-parity")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "bom: CycloneDX 1.6 valid, 2 model hashes equal the manifest's" in ok.stdout and "verified" in ok.stdout
    doc = json.loads((root / "bom.cdx.json").read_text())
    next(c for c in doc["components"] if c["name"] == "dense/tflite_int8")["hashes"][0]["content"] = "0" * 64
    (root / "bom.cdx.json").write_text(json.dumps(doc))
    bundle.write_manifest(root, bundle.read_manifest(root))  # re-listed: only the BOM check can catch it
    bad = run_cli("verify", str(root), "--skip-parity")
    assert bad.returncode == 1
    assert "FAIL bom: dense/tflite_int8 has SHA-256 000000000000…" in bad.stdout and "verification FAILED" in bad.stdout


@pytest.mark.unit
def test_report_command_rerenders_relists_and_is_idempotent(tmp_path):
    root = tmp_path / "planted-7"
    plant(root)
    before = (root / "report.html").read_text()
    assert rerender_report(root) is False  # same documents, same bytes
    shutil.rmtree(root / "bench")
    bundle.write_manifest(root, bundle.read_manifest(root))
    r = run_main("report", str(root))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{root / 'report.html'}: rendered again and re-listed in manifest.json"
    after = (root / "report.html").read_text()
    assert after != before and "Not benchmarked yet" in after
    files, _ = bundle.verify_dir(root)
    assert files, files.problems()
    assert run_main("report", str(root)).stdout.strip().endswith(": unchanged")
    missing = run_main("report", str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"error: {tmp_path / 'nope'} is not a bundle directory; give dist/<name>-<version>")


def chromium() -> str:
    """The browser the two tests below drive. `make test` and `make test-fast` install it first
    (`make browser`: Debian's chromium), so its absence is a failure that says what to run, not a skip."""
    from tests.export import browser
    exe = browser.executable()
    if exe is None:
        pytest.fail("no chromium on PATH: run `make browser` (make test and make test-fast run it first)")
    return exe


@pytest.mark.integration
def test_report_in_headless_chromium(tmp_path):
    """report.html in a real browser: it loads with no console error and no request, every chart has a
    size, and a screenshot is written (REPORT_SCREENSHOT=PATH keeps a copy)."""
    import os

    from tests.export import browser
    exe = chromium()
    plant(tmp_path / "b")
    page = browser.load(tmp_path / "b" / "report.html", exe)
    assert page.title == "planted-7: report"
    assert page.console_errors == []
    assert page.requests == []
    assert [c["id"] for c in page.charts] == ["chart-dense-latency", "chart-dense-accuracy", "chart-dense-parity",
                                             "chart-dense-training", "chart-dense-confusion"]
    assert all(c["width"] > 100 and c["height"] > 100 for c in page.charts), page.charts
    shot = tmp_path / "report.png"
    shot.write_bytes(page.screenshot)
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("REPORT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["REPORT_SCREENSHOT"])


@pytest.mark.integration
def test_a_console_error_and_a_fetch_would_be_seen(tmp_path):
    """The browser check can fail: a page with a script error and an image from the network is reported."""
    from tests.export import browser
    exe = chromium()
    page = tmp_path / "bad.html"
    page.write_text('<html><head><title>bad</title></head><body><img src="http://127.0.0.1:9/x.png">'
                    '<script>console.error("planted error"); undefinedFunction();</script></body></html>')
    got = browser.load(page, exe)
    assert "planted error" in got.console_errors and any("undefinedFunction" in e or "Uncaught" in e
                                                         for e in got.console_errors), got.console_errors
    assert got.requests == ["http://127.0.0.1:9/x.png"]


@pytest.mark.unit
def test_two_exports_compare_the_bom_and_card_by_their_stable_parts(tmp_path):
    """verify --against: the card is byte-identical between identical exports; the BOM may differ only in
    its serial number, timestamp and SavedModel hashes; report.html carries the export time."""
    from export.bundle import reproducibility
    a, b = tmp_path / "a" / "planted-7", tmp_path / "b" / "planted-7"
    plant(a)
    plant(b)
    doc = json.loads((b / "bom.cdx.json").read_text())
    doc["serialNumber"] = "urn:uuid:00000000-0000-4000-8000-000000000000"
    doc["metadata"]["timestamp"] = "2027-01-01T00:00:00+00:00"
    (b / "bom.cdx.json").write_text(json.dumps(doc))
    got = {d.path: d for d in reproducibility.compare(a, b)}
    assert got["MODEL_CARD.md"].status == "identical" and got["report.html"].status == "identical"
    assert got["bom.cdx.json"].status == "expected" and "stable part equal" in got["bom.cdx.json"].detail
    next(c for c in doc["components"] if c["name"] == "numpy")["version"] = "0.0.1"
    (b / "bom.cdx.json").write_text(json.dumps(doc))
    assert {d.path: d.status for d in reproducibility.compare(a, b)}["bom.cdx.json"] == "DIFFERENT"
    assert {"bom.cdx.json", "report.html"} <= set(reproducibility.record(a))
