"""The HTML report: self-contained, every figure loads, no console error (headless Chromium)."""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from capscale.cli import main
from capscale.data import store
from capscale.pipelines import analyze, report
from capscale.plotting import interactive


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    scores = store.example_store(n_models=4, n_items=30)
    analyze.run(scores, analyze.Options(out=root / "analysis", progress=False))
    (root / "store").mkdir()
    store.write(scores, root / "store" / "scores.parquet")  # the inspector's log-likelihoods
    (root / "tasks").mkdir()  # ... and question text
    (root / "tasks" / "toy.jsonl").write_text("".join(
        json.dumps({"doc_id": d, "context": f"question number {d} <b>?</b>", "choices": [f"c{d}-{c}" for c in range(4)],
                    "gold": d % 4}) + "\n" for d in range(30)))
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


@pytest.fixture(scope="module")
def full(results, tmp_path_factory) -> Path:
    """The results folder with every section: a real mass run, a backtest table with labelled rows."""
    from capscale.pipelines import mass

    root = tmp_path_factory.mktemp("full") / "res"
    shutil.copytree(results, root)
    mass.run(store.read(root / "store"), mass.Options(out=str(root / "mass")))
    (root / "predict").mkdir()
    rows = [  # chance is 1/4: [0, 1] and [0.1, 1] span chance to 1, [0.4, 0.9] does not
        {"task": "toy", "method": "ensemble", "heldout_model": "m3", "predicted": 0.6, "actual": 0.7,
         "abs_err": 0.1, "lower": 0.0, "upper": 1.0, "covered": True},
        {"task": "toy", "method": "direct", "heldout_model": "m3", "predicted": 0.65, "actual": 0.7,
         "abs_err": 0.05, "lower": 0.1, "upper": 1.0, "covered": True},
        {"task": "toy", "method": "sigmoid", "heldout_model": "m3", "predicted": 0.62, "actual": 0.7,
         "abs_err": 0.08, "lower": 0.4, "upper": 0.9, "covered": True},
    ]
    pd.DataFrame(rows).to_csv(root / "predict" / "backtest.csv", index=False)
    rows[2]["warnings"] = ["obs_sigmoid: parameter b = 0.25 is at its bound [0, 0.25]"]
    (root / "predict" / "backtest.json").write_text(json.dumps(rows))
    return root


def _browser(tmp_path: Path):
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromedriver not installed (Debian packages chromium, chromium-driver; "
                    "`make test` installs them where it can)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    exe, drv = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--no-first-run", "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(drv), options=opts)
    driver.set_window_size(1400, 1000)
    return driver


def _wait(driver, script: str, timeout: float = 20.0):
    import time

    t0 = time.time()
    while time.time() - t0 < timeout:
        v = driver.execute_script(script)
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


def test_report_renders_in_headless_chromium(full, tmp_path):
    """At 1400 px: nothing scrolls sideways, every <details> opens, every contents link resolves, the interactive
    figures render and hovering a point shows its doc_id and the question, the downloads decode, no console error."""
    pytest.importorskip("plotly")
    res = report.run(full, report.Options(output=tmp_path / "r.html"))
    assert res.summary["interactive"] is True
    out = res.files[0]
    driver = _browser(tmp_path)
    try:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        driver.get(out.as_uri())
        assert "capscale report" in driver.title
        n_img, n_loaded = driver.execute_script(
            "const im=[...document.images]; return [im.length, im.filter(i=>i.complete&&i.naturalWidth>0).length];")
        assert n_img >= 6 and n_loaded == n_img, (n_img, n_loaded)
        # the interactive figures render (the chain's correlation scatter and one mass scatter per task)
        _wait(driver, "const p=[...document.querySelectorAll('div.cs-plot')]; "
                      "return p.length>=2 && p.every(d=>d.dataset.rendered==='1');")
        assert driver.execute_script("return [...document.querySelectorAll('div.cs-plot')]"
                                     ".some(d=>d.dataset.rendered==='error')") is False
        # no horizontal page overflow at 1400 px
        width, inner = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert inner == 1400 and width <= inner, (width, inner)
        # every table-of-contents link resolves to an element of the page
        hrefs = driver.execute_script("return [...document.querySelectorAll('nav.toc a')].map(a=>a.getAttribute('href'))")
        assert len(hrefs) >= 8 and all(h.startswith("#") for h in hrefs)
        missing = driver.execute_script("return arguments[0].filter(h=>!document.getElementById(h.slice(1)))", hrefs)
        assert missing == [], missing
        for h in ("#findings", "#chain", "#chain-toy", "#mass-toy", "#predict-toy", "#emergence-toy", "#chain-items"):
            assert h in hrefs, h
        # every <details> opens when its summary is clicked
        details = driver.find_elements(By.CSS_SELECTOR, "details")
        assert len(details) >= 5
        for det in details:
            summary = det.find_element(By.CSS_SELECTOR, "summary")
            driver.execute_script("arguments[0].scrollIntoView({block:'center'})", summary)
            summary.click()
            assert det.get_attribute("open") is not None, summary.text
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 1400, width  # still no sideways scroll with every raw table open
        # hovering a point of the mass scatter: the tooltip has its doc_id, the inspector the question and choices
        div = driver.find_elements(By.CSS_SELECTOR, "div.cs-plot")[1]
        driver.execute_script("arguments[0].scrollIntoView({block:'center'})", div)
        doc, dx, dy = driver.execute_script("""
            const div=arguments[0], fl=div._fullLayout, t=div.data[0], i=3, r=div.getBoundingClientRect();
            return [t.customdata[i][0], fl._size.l + fl.xaxis.l2p(t.x[i]) - r.width/2,
                    fl._size.t + fl.yaxis.l2p(t.y[i]) - r.height/2];""", div)
        ActionChains(driver).move_to_element_with_offset(div, int(dx), int(dy)).perform()
        tip = _wait(driver, "return [...arguments[0].querySelectorAll('.hovertext')].map(x=>x.textContent).join(' ')"
                    .replace("arguments[0]", "document.querySelectorAll('div.cs-plot')[1]"))
        assert "doc_id" in tip and "task: toy" in tip, tip
        insp = _wait(driver, "const d=document.querySelectorAll('div.cs-plot')[1];"
                             "const t=document.getElementById(d.dataset.inspector).innerText;"
                             "return t.includes('log-lik') ? t : null;")
        hovered = re.search(r"doc_id (\d+)", insp).group(1)
        assert f"question number {hovered} <b>?</b>" in insp  # the text, escaped (not HTML)
        assert f"c{hovered}-0" in insp and "checkpoint m" in insp
        assert doc is not None
        # the sortable table sorts by a correlation column
        th = driver.find_element(By.XPATH, "//table[contains(@class,'sortable')]//th[contains(., 'r log p_vocab')]")
        driver.execute_script("arguments[0].scrollIntoView({block:'center'})", th)
        th.click()
        vals = driver.execute_script("""
            const t=document.querySelector('table.sortable'), i=[...t.tHead.rows[0].cells].findIndex(c=>c.dataset.dir);
            return [...t.tBodies[0].rows].map(r=>r.cells[i].dataset.v).filter(v=>v!=='').map(Number);""")
        assert len(vals) >= 20 and vals == sorted(vals)
        # an embedded download decodes to the file itself
        head = driver.execute_async_script(
            "const done=arguments[arguments.length-1];"
            "const a=[...document.querySelectorAll('a.dl')].find(a=>a.download==='summary.csv');"
            "capscaleDecode(a.dataset.src).then(t=>done(t.split('\\n')[0]));")
        assert head == (full / "analysis" / "summary.csv").read_text().split("\n")[0]
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_findings_first_then_contents_then_sections(full, tmp_path):
    text = report.run(full, report.Options(output=tmp_path / "r.html")).files[0].read_text()
    pos = [text.index(s) for s in ("<h2 id='findings'>", "<nav class='toc'", "<h2 id='chain'>", "<h2 id='mass'>",
                                   "<h2 id='predict'>", "<h2 id='emergence'>")]
    assert pos == sorted(pos)
    findings = text[pos[0]:pos[1]]
    assert "Where predictability is lost" in findings and "href='#chain-toy'" in findings
    assert "Held-out models" in findings and "m3 scored <b>0.700</b>" in findings
    assert "no predictability verdict in these results" in findings
    assert "INSUFFICIENT_DATA" in findings and "not enough data to decide" in findings
    ids = set(re.findall(r"id='([^']+)'", text))
    for href in re.findall(r"href='#([^']+)'", text):
        assert href in ids, href
    # figures come before the section's summary table only where the table is the section's answer: each task
    # block starts with its figures
    block = text[text.index("<h3 id='chain-toy'>"):]
    assert block.index("<figure>") < block.index("</h3>") + 200


def test_uninformative_output_is_labelled(full, tmp_path):
    text = report.run(full, report.Options(output=tmp_path / "r.html")).files[0].read_text()
    pred = text[text.index("<h3 id='predict-toy'>"):]
    rows = re.findall(r"<tr>.*?</tr>", pred[:pred.index("</table>")])
    by_method = {m: r for r in rows for m in ("ensemble", "direct", "sigmoid") if f">{m}<" in r}
    assert "spans chance to 1" in by_method["ensemble"] and "spans chance to 1" in by_method["direct"]
    assert "spans chance to 1" not in by_method["sigmoid"]
    assert "fit at a parameter bound (obs_sigmoid: parameter b = 0.25)" in by_method["sigmoid"]
    assert "(uninformative)" in by_method["ensemble"]  # "covered" is never shown bare for such an interval
    assert "m3 scored <b>0.700</b>; the 3 methods predicted 0.600–0.650 (median 0.620); 1 of 1 informative 90% intervals contain it, 2 more span chance to 1" in text
    assert "not enough data to decide" in text[text.index("<h2 id='emergence'>"):]


def test_interval_is_uninformative():
    f = report.interval_is_uninformative
    assert f(0.0, 1.0, 0.25) and f(0.1, 1.0, 0.25) and f(0.28, 0.99, 0.25)
    assert not f(0.33, 1.0, 0.25) and not f(0.0, 0.9, 0.25) and not f(0.4, 0.9, None)
    assert f(0.0, 1.0, None) and not f(float("nan"), 1.0, 0.25)


def test_predictability_verdict_is_shown_when_the_backtest_has_one(full, tmp_path):
    root = _copy(full, tmp_path)
    bt = pd.read_csv(root / "predict" / "backtest.csv").assign(predictability="at_chance")
    bt.to_csv(root / "predict" / "backtest.csv", index=False)
    text = report.run(root).files[0].read_text()
    assert "predictability verdict: <b>at_chance</b>" in text
    assert "no predictability verdict in these results" not in text


def _embedded(text: str, name: str) -> bytes:
    bid = re.search(rf"download='{re.escape(name)}' data-src='(gz\d+)'", text).group(1)
    b64 = re.search(rf"id='{bid}'>([^<]*)<", text).group(1)
    return gzip.decompress(base64.b64decode(b64))


def test_raw_tables_are_collapsed_complete_and_downloadable(full, tmp_path):
    text = report.run(full, report.Options(output=tmp_path / "r.html")).files[0].read_text()
    fits = pd.read_csv(full / "mass" / "mass_fits.csv")
    assert len(fits) > report.RAW_ROWS
    m = re.search(r"<details class='raw'><summary>mass/mass_fits.csv — (\d+) rows × (\d+) columns</summary>"
                  r"<p class='note'>first (\d+) of (\d+) rows", text)
    assert m and int(m.group(1)) == len(fits) == int(m.group(4)) and int(m.group(3)) == report.RAW_ROWS
    for f in ("mass/mass_fits.csv", "analysis/summary.csv", "predict/backtest.csv", "emergence/toy.json"):
        assert _embedded(text, Path(f).name) == (full / f).read_bytes(), f
    # every "first N of M rows" is inside a collapsed block
    for hit in re.finditer(r"first \d+ of \d+ rows", text):
        assert text.rfind("<details", 0, hit.start()) > text.rfind("</details>", 0, hit.start())
    # the per-item table behind the sortable view is downloadable too, and has every item
    items = pd.read_csv(__import__("io").BytesIO(_embedded(text, "per_item_correlations.csv")))
    assert len(items) == 30 and "r_log_p_vocab_correct" in items.columns


def test_static_report_without_plotly(full, tmp_path, monkeypatch):
    monkeypatch.setattr(interactive, "plotly_js", lambda: None)
    res = report.run(full, report.Options(output=tmp_path / "r.html"))
    text = res.files[0].read_text()
    assert res.summary["interactive"] is False and res.summary["sections"]["mass"] == "ok"
    assert "class='cs-plot'" not in text and "Plotly.newPlot" in text  # the runtime is there, no figure asks for it
    assert "the optional <code>plotly</code> package is not installed" in text
    assert "class='sortable'" in text and text.count("data:image/png;base64,") >= 6
    assert any("plotly is not installed" in n for n in res.notes)
    static = report.run(full, report.Options(output=tmp_path / "s.html", interactive=False))
    assert static.summary["interactive"] is False and not any("plotly" in n for n in static.notes)


def test_item_inspector_inputs_and_hover_data(full):
    items = pd.read_parquet(full / "analysis" / "per_item.parquet")
    scores = store.read(full / "store")
    text = {("toy", str(d)): {"question": f"q{d}", "choices": ["a", "b", "c", "d"], "gold": d % 4} for d in range(30)}
    spec = interactive.mass_scatter(items, "toy", text=text, logliks=scores, max_items=10)
    tr = spec["figure"]["data"][0]
    assert spec["n_items"] == 30 and spec["n_items_shown"] == 10 and "10 of 30 items (a random sample" in spec["note"]
    assert len(tr["x"]) == len(tr["customdata"]) == spec["n_points"] == 40  # 10 items x 4 models
    doc, model, key = tr["customdata"][0]
    assert "doc_id: %{customdata[0]}" in tr["hovertemplate"]
    ll = spec["inspector"]["ll"][f"{key}\x1e{model}"]
    want = scores[(scores["doc_id"].astype(str) == doc) & (scores["model_id"] == model)].sort_values("choice_idx")
    assert [r[0] for r in ll] == want["choice_idx"].tolist()
    assert [r[1] for r in ll] == pytest.approx(want["loglik"].round(3).tolist())
    assert spec["inspector"]["items"][key]["question"] == f"q{doc}"
    tab = interactive.item_table(pd.read_parquet(full / "analysis" / "correlations.parquet"), items)
    cs = interactive.correlation_scatter(tab, text=text, logliks=scores, inspect_model={"toy": "m3"})
    assert cs["n_items"] == 30 and cs["n_items_shown"] + cs["n_undefined"] == 30
    assert all(cd[1] == "m3" for cd in cs["figure"]["data"][0]["customdata"])
    json.dumps(cs)  # plain JSON


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
