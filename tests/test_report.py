"""The HTML report: self-contained, every figure loads, no console error (headless Chromium)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from capscale.cli import main
from capscale.data import store
from capscale.pipelines import analyze, report


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    analyze.run(store.example_store(n_models=4, n_items=30), analyze.Options(out=root / "analysis", progress=False))
    (root / "checks.json").write_text(json.dumps({"knowledge scaling": {"passed": True, "detail": "0.2 -> 0.7"}}))
    (root / "emergence").mkdir()
    (root / "emergence" / "toy.json").write_text(json.dumps(
        {"task": "toy", "family": "example", "n_models": 4, "n_items": 30, "verdict": "INSUFFICIENT_DATA",
         "reasons": ["fewer than 5 models"], "caveats": []}))
    return root


def test_report_is_self_contained(results, tmp_path):
    res = report.run(results, report.Options(output=tmp_path / "r.html"))
    out = tmp_path / "r.html"
    assert res.files == [out] and res.summary["report"] == str(out)
    assert res.summary["sections"] == {"analysis": "ok", "mass": "not run", "predict": "not run", "emergence": "ok"}
    text = out.read_text()
    assert text.count("data:image/png;base64,") >= 3
    assert "INSUFFICIENT_DATA" in text and "knowledge scaling" in text
    assert "This stage was not run" in text  # mass / predict absent
    for bad in ('src="http', "src='http", '<link ', "<script src"):
        assert bad not in text


def test_report_cli(results, tmp_path, capsys):
    assert main(["report", str(results), "-o", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").exists()
    assert capsys.readouterr().out == f"report written to {tmp_path / 'x.html'}\n"
    assert main(["report", str(tmp_path / "nope")]) == 1  # invalid input
    assert capsys.readouterr().err == f"capscale report: error: results folder {str(tmp_path / 'nope')!r} does not exist\n"


def _chromium() -> tuple[str, str] | None:
    for b in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(b)
        drv = shutil.which("chromedriver")
        if exe and drv:
            return exe, drv
    return None


def test_report_renders_in_headless_chromium(results, tmp_path):
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromedriver not installed (Debian packages chromium, chromium-driver; "
                    "`make test` installs them where it can)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    exe, drv = found
    out = report.run(results, report.Options(output=tmp_path / "r.html")).files[0]
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(drv), options=opts)
    try:
        driver.get(out.as_uri())
        n_img, n_loaded = driver.execute_script(
            "const im=[...document.images]; return [im.length, im.filter(i=>i.complete&&i.naturalWidth>0).length];")
        assert n_img >= 3 and n_loaded == n_img, (n_img, n_loaded)
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
        assert "capscale report" in driver.title
    finally:
        driver.quit()
