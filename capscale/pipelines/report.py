"""``capscale report``: one self-contained HTML file from a results folder.

The folder is what ``capscale demo`` writes (or the same layout assembled by hand):

=====================  ==============================================================
``checks.json``        optional: named checks with ``passed`` and ``detail`` (shown first)
``analysis/``          ``capscale analyze`` output (summary.csv, ordering.csv, figures/)
``mass/``              ``capscale mass`` output (tables and figures)
``predict/``           backtests (``backtest.csv`` or ``*.csv``) and fit figures
``emergence/``         ``<task>.json`` verdicts and figures
=====================  ==============================================================

Figures are embedded as base64 PNG, tables as HTML; the page loads nothing from outside.
Missing sections are shown as "not run" rather than failing. :func:`run` takes the folder and :class:`Options`
and returns a :class:`~capscale.pipelines._base.RunResult` naming the HTML file written.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from capscale._io import atomic_write_text
from capscale.pipelines._base import RunResult, StageOptions

__all__ = ["Options", "run", "SECTIONS"]

#: (folder, title, explanation) in report order.
SECTIONS = [
    ("analysis", "1. The transformation chain: per-item correlation with compute",
     "For every item, the correlation across the family's models of each metric with log10 compute. "
     "Following Schaeffer et al. (2024), predictability is lost along the chain log p_vocab(correct) → "
     "p_choices(correct) → Brier → accuracy: the complementary CDFs show the fraction of items whose "
     "score rises with compute with correlation above x."),
    ("mass", "2. Correct vs incorrect probability mass",
     "How the vocabulary mass on the correct choice and on the incorrect choices moves with compute, "
     "per item, and the accuracy predicted from both masses."),
    ("predict", "3. Fitted transforms and backtests",
     "Laws from compute to task loss to accuracy fitted on the smaller models and checked on the held-out "
     "largest one (leave-largest-out), with 90% intervals."),
    ("emergence", "4. Emergence diagnostics",
     "Is a sharp jump in a benchmark curve real, or made by a discontinuous metric? Verdict per task with "
     "its reasons (Schaeffer, Miranda and Koyejo 2023; BIG-bench breakthroughness; PassUntil)."),
]

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#1c2833;line-height:1.45;padding:0 1em}
h1{font-size:1.7em;margin-bottom:0.2em} h2{border-bottom:2px solid #d5d8dc;padding-bottom:0.2em;margin-top:2em}
h3{font-size:1.05em;margin-top:1.4em}
table{border-collapse:collapse;font-size:0.82em;margin:0.6em 0;display:block;overflow-x:auto}
th,td{border:1px solid #d5d8dc;padding:3px 7px;text-align:right} th{background:#f4f6f7}
td:first-child,th:first-child{text-align:left}
figure{display:inline-block;margin:0.6em 0.8em 0.6em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;border:1px solid #eaeded} figcaption{font-size:0.8em;color:#566573}
.pass{color:#1e8449;font-weight:600}.fail{color:#b03a2e;font-weight:600}
.note{color:#566573;font-size:0.9em} .missing{color:#b9770e}
code{background:#f4f6f7;padding:0 3px}
"""


def _img(path: Path, root: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = html.escape(str(path.relative_to(root)))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{cap}">'
            f"<figcaption>{cap}</figcaption></figure>")


def _table(df: pd.DataFrame, max_rows: int = 60, floatfmt: str = "{:.4g}") -> str:
    note = ""
    if len(df) > max_rows:
        note = f'<p class="note">first {max_rows} of {len(df)} rows</p>'
        df = df.head(max_rows)
    return df.to_html(index=False, border=0, float_format=lambda v: floatfmt.format(v), na_rep="–",
                      escape=True) + note


def _read_table(path: Path) -> pd.DataFrame | None:
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
    except Exception:  # noqa: BLE001 - an unreadable table is reported, not fatal
        return None
    return None


def _checks_html(path: Path) -> str:
    checks = json.loads(path.read_text())
    rows = []
    items = checks.items() if isinstance(checks, dict) else ((c.get("name"), c) for c in checks)
    for name, c in items:
        ok = c.get("passed")
        cls, word = ("pass", "holds") if ok else ("fail", "does not hold")
        rows.append(f"<tr><td>{html.escape(str(name))}</td><td class='{cls}'>{word}</td>"
                    f"<td style='text-align:left'>{html.escape(str(c.get('detail', '')))}</td></tr>")
    return ("<h2>What the demo family shows</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>"
            + "".join(rows) + "</table>")


def _analysis_html(d: Path) -> str:
    parts = []
    summ = _read_table(d / "summary.csv")
    if summ is not None and len(summ):
        sp = summ[summ["method"] == "spearman"] if "method" in summ else summ
        cols = [c for c in ("family", "task", "metric", "n_items", "nan_frac", "mean", "median", "frac_ge_0.75")
                if c in sp.columns]
        parts.append("<h3>Spearman summary per task and metric</h3>" + _table(sp[cols], max_rows=80))
    order = _read_table(d / "ordering.csv")
    if order is not None and len(order) and "holds" in order:
        frac = order.dropna(subset=["holds"]).groupby(["method", "statistic"])["holds"].mean().reset_index()
        frac = frac.rename(columns={"holds": "fraction of tasks where the ordering holds"})
        parts.append("<h3>Ordering check: log p_vocab ≥ p_choices ≥ −Brier ≥ accuracy</h3>" + _table(frac))
    return "".join(parts)


def _emergence_html(d: Path) -> str:
    rows = []
    for f in sorted(d.glob("*.json")):
        try:
            j = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        if not isinstance(j, dict) or "verdict" not in j:
            continue
        rows.append({"task": j.get("task"), "family": j.get("family"), "n_models": j.get("n_models"),
                     "n_items": j.get("n_items"), "verdict": j.get("verdict"),
                     "reasons": "; ".join(map(str, j.get("reasons", [])))[:400]})
    if not rows:
        return ""
    return "<h3>Verdicts</h3>" + _table(pd.DataFrame(rows), max_rows=200)


def _generic_tables(d: Path, skip: set[str]) -> str:
    parts = []
    for f in sorted(d.glob("*.csv")):
        if f.name in skip:
            continue
        t = _read_table(f)
        if t is not None and len(t):
            parts.append(f"<h3>{html.escape(f.name)}</h3>" + _table(t, max_rows=40))
    return "".join(parts)


@dataclass(frozen=True)
class Options(StageOptions):
    """Settings of ``capscale report``.

    Attributes
    ----------
    output : path-like, optional
        HTML file to write (default ``RESULTS_DIR/report.html``). Written atomically.
    title : str
        Page title.
    """

    output: str | os.PathLike | None = None
    title: str = "capscale report"


def run(results_dir: str | os.PathLike, options: Options | None = None) -> RunResult:
    """Write one self-contained HTML report for a results folder.

    Parameters
    ----------
    results_dir : path-like
        Folder with ``analysis/``, ``mass/``, ``predict/``, ``emergence/`` (any may be missing) and
        an optional ``checks.json`` and ``run.json``.
    options : Options, optional
        Output file and title (default ``Options()``).

    Returns
    -------
    RunResult
        ``files``: the HTML file; ``summary``: ``report`` (its path) and ``sections`` (``"ok"`` or
        ``"not run"`` per stage folder); ``notes``: the sections not run.

    Raises
    ------
    FileNotFoundError
        ``results_dir`` is not a folder.
    """
    options = options or Options()
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {str(root)!r} does not exist")
    out = Path(options.output) if options.output else root / "report.html"
    title = options.title
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='note'>Generated {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M UTC} from "
            f"<code>{html.escape(str(root))}</code>.</p>"]
    run_json = root / "run.json"
    if run_json.exists():
        info = json.loads(run_json.read_text())
        stages = info.pop("stages", None)
        lines = "".join(f"<tr><td>{html.escape(str(k))}</td><td style='text-align:left'>"
                        f"{html.escape(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
                        for k, v in info.items() if k not in ("checks", "failed", "report"))
        body.append(f"<h2>What ran</h2><table>{lines}</table>")
        if isinstance(stages, dict) and stages:
            rows = [{"stage": k, "status": v.get("status", "ok"), "seconds": v.get("seconds"),
                     "detail": v.get("error") or ", ".join(f"{a}={b}" for a, b in v.items()
                                                           if a in ("rows", "models", "tasks"))}
                    for k, v in stages.items()]
            body.append("<h3>Stages</h3>" + _table(pd.DataFrame(rows)))
    if (root / "checks.json").exists():
        body.append(_checks_html(root / "checks.json"))
    sections: dict[str, str] = {}
    for folder, heading, text in SECTIONS:
        d = root / folder
        body.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        sections[folder] = "ok" if d.is_dir() else "not run"
        if not d.is_dir():
            body.append("<p class='missing'>This stage was not run for these results.</p>")
            continue
        if folder == "analysis":
            body.append(_analysis_html(d))
        elif folder == "emergence":
            body.append(_emergence_html(d))
            body.append(_generic_tables(d, skip=set()))
        else:
            body.append(_generic_tables(d, skip=set()))
        pngs = sorted(d.rglob("*.png"))
        if pngs:
            body.append("<div>" + "".join(_img(p, root) for p in pngs) + "</div>")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    atomic_write_text(out, page)
    return RunResult(stage="report", out=out.parent, files=[out],
                     summary={"report": str(out), "sections": sections},
                     notes=[f"{name}/ not found: section shown as not run" for name, s in sections.items()
                            if s != "ok"])
