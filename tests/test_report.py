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
    assert capsys.readouterr().out == (f"report written to {tmp_path / 'x.html'}\n"
                                       "note: mass/ not found: section shown as not run\n"
                                       "note: predict/ not found: section shown as not run\n")
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


# ------------------------------------------------------------------------------------------------
# nothing silently wrong: unreadable inputs are named, never a traceback, never a silently missing section


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _copy(results: Path, tmp_path: Path) -> Path:
    root = tmp_path / "res"
    shutil.copytree(results, root)
    return root


def test_truncated_checks_json_is_one_line_naming_the_file(results, tmp_path, capsys):
    root = _copy(results, tmp_path)
    (root / "checks.json").write_text('{"knowledge scaling": {"passed": tr')
    assert main(["report", str(root)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("capscale report: error: ") and str(root / "checks.json") in line
    assert "not valid JSON" in line and "line 1" in line
    (root / "checks.json").write_text('["just a string"]')  # valid JSON, wrong shape
    assert main(["report", str(root)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert str(root / "checks.json") in line and "check 0" in line


def test_truncated_run_json_is_one_line_naming_the_file(results, tmp_path, capsys):
    root = _copy(results, tmp_path)
    (root / "run.json").write_text('{"family": "x", "sta')
    assert main(["report", str(root)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert str(root / "run.json") in line and "not valid JSON" in line


def test_output_under_a_file_or_onto_a_folder_is_one_line(results, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile" / "r.html", tmp_path / "afile" / "sub" / "r.html"):
        assert main(["report", str(results), "-o", str(out)]) == 1
        line = _one_line(capsys.readouterr().err)
        assert line == (f"capscale report: error: cannot write the report to {str(out)!r}: "
                        f"{str(tmp_path / 'afile')!r} is a file, not a folder")
    (tmp_path / "adir").mkdir()
    assert main(["report", str(results), "-o", str(tmp_path / "adir")]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line == f"capscale report: error: cannot write the report to {str(tmp_path / 'adir')!r}: it is a folder"


def test_unreadable_section_files_are_noted_not_dropped(results, tmp_path, capsys):
    root = _copy(results, tmp_path)
    (root / "predict").mkdir()
    (root / "predict" / "backtest.csv").write_text('task,err\narc,0.1\npiqa,"0.')  # cut inside a field
    (root / "predict" / "cut.csv").write_text("task,err,width\narc,0.1,0.2\npiqa,0.")  # cut inside the last row
    (root / "predict" / "empty.csv").write_text("")
    (root / "mass").mkdir()
    png = next((root / "analysis").rglob("*.png"))
    (root / "mass" / "fig.png").write_bytes(png.read_bytes()[:200])  # truncated PNG
    (root / "mass" / "junk.png").write_bytes(b"not a png at all")
    (root / "emergence" / "half.json").write_text('{"task": "half", "verdict": "EMER')
    (root / "analysis" / "ordering.csv").write_text("x,y\n1,2\n")  # readable, but not an ordering table

    res = report.run(root, report.Options(output=tmp_path / "r.html"))
    assert res.summary["sections"] == {"analysis": "incomplete", "mass": "incomplete", "predict": "incomplete",
                                       "emergence": "incomplete"}
    skipped = {Path(k).relative_to(root).as_posix(): v for k, v in res.summary["skipped_files"].items()}
    assert set(skipped) == {"predict/backtest.csv", "predict/cut.csv", "predict/empty.csv", "mass/fig.png",
                            "mass/junk.png", "emergence/half.json", "analysis/ordering.csv"}
    assert "truncated" in skipped["mass/fig.png"] and "not a PNG" in skipped["mass/junk.png"]
    assert "not valid JSON" in skipped["emergence/half.json"]
    assert "last row" in skipped["predict/cut.csv"] and "empty" in skipped["predict/empty.csv"]
    assert "missing column" in skipped["analysis/ordering.csv"]
    assert len(res.notes) == 7 and all(str(root) in n and "could not be read" in n for n in res.notes)
    text = (tmp_path / "r.html").read_text()
    for rel in skipped:
        assert f"<code>{rel}</code> could not be read" in text, rel
    assert "INSUFFICIENT_DATA" in text  # the readable verdict is still shown

    assert main(["report", str(root), "-o", str(tmp_path / "r2.html")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"report written to {tmp_path / 'r2.html'}"
    assert sorted(out[1:]) == sorted(f"note: {n}" for n in res.notes)


def test_section_not_run_and_empty_section_say_so_in_one_line(tmp_path, capsys):
    root = tmp_path / "res"
    (root / "mass").mkdir(parents=True)
    (root / "predict").write_text("a file, not a folder")
    res = report.run(root)
    assert res.summary["sections"] == {"analysis": "not run", "mass": "empty", "predict": "not run",
                                       "emergence": "not run"}
    text = (root / "report.html").read_text()
    assert text.count("This stage was not run for these results") == 3
    assert "<code>mass/</code> has no tables or figures" in text
    assert "predict/ is not a folder: section shown as not run" in " ".join(res.notes)
    assert any("mass/" in n and "no tables or figures" in n for n in res.notes)
