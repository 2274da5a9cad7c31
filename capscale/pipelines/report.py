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
Missing sections are shown as "not run" rather than failing; a file that cannot be read is named in its
section and in the result's ``notes`` (never silently left out). :func:`run` takes the folder and :class:`Options`
and returns a :class:`~capscale.pipelines._base.RunResult` naming the HTML file written.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from capscale._io import atomic_write_text
from capscale.errors import InputError
from capscale.pipelines._base import RunResult, StageOptions

__all__ = ["Options", "run", "SECTIONS", "ReportInputError"]

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


class ReportInputError(InputError):
    """A top-level file of the results folder (``checks.json``, ``run.json``) cannot be read; names the file.

    ``why`` is the reason without the file name.
    """

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{str(path)!r}: {why}")
        self.path, self.why = path, why


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a complete PNG (signature, chunk lengths and CRCs, IHDR first, IEND last), or None."""
    if not data:
        return "empty file"
    if not data.startswith(_PNG_SIGNATURE):
        return "not a PNG (no PNG signature)"
    pos, first = len(_PNG_SIGNATURE), True
    while True:
        if pos + 8 > len(data):
            return f"truncated at byte {len(data)} (no IEND chunk)"
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return f"truncated at byte {len(data)} (inside a {kind.decode('latin-1')!r} chunk)"
        if first and kind != b"IHDR":
            return "not a PNG (first chunk is not IHDR)"
        if zlib.crc32(data[pos + 4:pos + 8 + length]) != int.from_bytes(data[end - 4:end], "big"):
            return f"corrupt (bad CRC in the {kind.decode('latin-1')!r} chunk at byte {pos})"
        if kind == b"IEND":
            return None
        pos, first = end, False


class _Reader:
    """Reads the section files of one results folder; every file it cannot use is recorded in ``skipped``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.skipped: dict[Path, str] = {}

    def skip(self, path: Path, why: str) -> str:
        """Record ``path`` as unreadable and return the one-line HTML note shown in its section."""
        self.skipped[path] = why
        rel = html.escape(path.relative_to(self.root).as_posix())
        return f"<p class='missing'><code>{rel}</code> could not be read: {html.escape(why)}.</p>"

    def table(self, path: Path) -> tuple[pd.DataFrame | None, str]:
        """``(table, "")`` or ``(None, note)`` for a CSV or Parquet file."""
        try:
            if path.suffix == ".parquet":
                return pd.read_parquet(path), ""
            df = pd.read_csv(path)
            raw = path.read_bytes()
            if raw and not raw.endswith(b"\n") and len(df):
                # pandas pads a row cut short with NaN: a last row missing fields and no final newline is a cut file
                last = raw.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
                n = len(next(csv.reader([last]), []))
                if n < len(df.columns):
                    return None, self.skip(path, f"looks truncated (the last row has {n} of {len(df.columns)} "
                                                 "fields and the file does not end with a newline)")
            return df, ""
        except pd.errors.EmptyDataError:
            return None, self.skip(path, "empty file (no header)")
        except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            return None, self.skip(path, f"{type(e).__name__}: {msg}")

    def json(self, path: Path) -> tuple[Any, str]:
        """``(value, "")`` or ``(None, note)`` for a JSON file."""
        try:
            return _load_json(path), ""
        except ReportInputError as e:
            return None, self.skip(path, e.why)
        except OSError as e:
            return None, self.skip(path, f"{type(e).__name__}: {e.strerror or e}")

    def img(self, path: Path) -> str:
        """The ``<figure>`` of a PNG, or the note saying why it cannot be shown."""
        try:
            data = path.read_bytes()
        except OSError as e:
            return self.skip(path, f"{type(e).__name__}: {e.strerror or e}")
        problem = _png_problem(data)
        if problem:
            return self.skip(path, problem)
        cap = html.escape(path.relative_to(self.root).as_posix())
        return (f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{cap}">'
                f"<figcaption>{cap}</figcaption></figure>")


def _load_json(path: Path) -> Any:
    """Parse a JSON file; :class:`ReportInputError` naming the file, line and column when it is not JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ReportInputError(path, f"not valid JSON (not UTF-8 text at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        what = "empty file" if not text.strip() else f"{e.msg} at line {e.lineno} column {e.colno}"
        cut = " (the file looks truncated)" if e.pos >= len(text.rstrip()) and text.strip() else ""
        raise ReportInputError(path, f"not valid JSON ({what}){cut}") from None


def _table(df: pd.DataFrame, max_rows: int = 60, floatfmt: str = "{:.4g}") -> str:
    note = ""
    if len(df) > max_rows:
        note = f'<p class="note">first {max_rows} of {len(df)} rows</p>'
        df = df.head(max_rows)
    return df.to_html(index=False, border=0, float_format=lambda v: floatfmt.format(v), na_rep="–",
                      escape=True) + note


def _checks_html(path: Path) -> str:
    checks = _load_json(path)
    if isinstance(checks, dict):
        items = list(checks.items())
    elif isinstance(checks, list):
        items = [(c.get("name") if isinstance(c, dict) else None, c) for c in checks]
    else:
        raise ReportInputError(path, "expected an object of checks (name: {passed, detail}) or a list of them, "
                               f"got {type(checks).__name__}")
    rows = []
    for i, (name, c) in enumerate(items):
        if not isinstance(c, dict):
            label = f"check {name!r}" if isinstance(checks, dict) else f"check {i}"
            raise ReportInputError(path, f"{label} must be an object with 'passed' and 'detail', "
                                   f"got {type(c).__name__} {c!r:.60}")
        ok = c.get("passed")
        cls, word = ("pass", "holds") if ok else ("fail", "does not hold")
        rows.append(f"<tr><td>{html.escape(str(name))}</td><td class='{cls}'>{word}</td>"
                    f"<td style='text-align:left'>{html.escape(str(c.get('detail', '')))}</td></tr>")
    return ("<h2>What the demo family shows</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>"
            + "".join(rows) + "</table>")


def _run_html(path: Path) -> list[str]:
    info = _load_json(path)
    if not isinstance(info, dict):
        raise ReportInputError(path, f"expected a JSON object, got {type(info).__name__}")
    stages = info.pop("stages", None)
    lines = "".join(f"<tr><td>{html.escape(str(k))}</td><td style='text-align:left'>"
                    f"{html.escape(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
                    for k, v in info.items() if k not in ("checks", "failed", "report"))
    body = [f"<h2>What ran</h2><table>{lines}</table>"]
    if isinstance(stages, dict) and stages:
        rows = [{"stage": k, "status": v.get("status", "ok"), "seconds": v.get("seconds"),
                 "detail": v.get("error") or ", ".join(f"{a}={b}" for a, b in v.items()
                                                       if a in ("rows", "models", "tasks"))}
                if isinstance(v, dict) else {"stage": k, "status": str(v), "seconds": None, "detail": ""}
                for k, v in stages.items()]
        body.append("<h3>Stages</h3>" + _table(pd.DataFrame(rows)))
    return body


def _missing_columns(rd: _Reader, path: Path, df: pd.DataFrame, need: Sequence[str]) -> str:
    miss = [c for c in need if c not in df.columns]
    return rd.skip(path, f"missing column(s) {miss}; has {list(df.columns)[:12]}") if miss else ""


def _analysis_html(rd: _Reader, d: Path) -> str:
    parts = []
    if (d / "summary.csv").exists():
        summ, note = rd.table(d / "summary.csv")
        parts.append(note)
        if summ is not None and len(summ):
            sp = summ[summ["method"] == "spearman"] if "method" in summ else summ
            cols = [c for c in ("family", "task", "metric", "n_items", "nan_frac", "mean", "median",
                                "frac_ge_0.75") if c in sp.columns]
            parts.append(_missing_columns(rd, d / "summary.csv", sp, ["task", "metric"]) if not cols else
                         "<h3>Spearman summary per task and metric</h3>" + _table(sp[cols], max_rows=80))
    if (d / "ordering.csv").exists():
        order, note = rd.table(d / "ordering.csv")
        parts.append(note)
        if order is not None and len(order):
            note = _missing_columns(rd, d / "ordering.csv", order, ["method", "statistic", "holds"])
            if note:
                parts.append(note)
            else:
                frac = (order.dropna(subset=["holds"]).groupby(["method", "statistic"])["holds"]
                        .mean().reset_index())
                frac = frac.rename(columns={"holds": "fraction of tasks where the ordering holds"})
                parts.append("<h3>Ordering check: log p_vocab ≥ p_choices ≥ −Brier ≥ accuracy</h3>"
                             + _table(frac))
    return "".join(parts)


def _emergence_html(rd: _Reader, d: Path) -> str:
    rows, notes = [], []
    for f in sorted(d.glob("*.json")):
        j, note = rd.json(f)
        notes.append(note)
        if not isinstance(j, dict) or "verdict" not in j:
            continue
        rows.append({"task": j.get("task"), "family": j.get("family"), "n_models": j.get("n_models"),
                     "n_items": j.get("n_items"), "verdict": j.get("verdict"),
                     "reasons": "; ".join(map(str, j.get("reasons", [])))[:400]})
    verdicts = "<h3>Verdicts</h3>" + _table(pd.DataFrame(rows), max_rows=200) if rows else ""
    return verdicts + "".join(notes)


def _generic_tables(rd: _Reader, d: Path, skip: set[str]) -> str:
    parts = []
    for f in sorted(d.glob("*.csv")):
        if f.name in skip:
            continue
        t, note = rd.table(f)
        parts.append(note)
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


def _check_output(out: Path) -> None:
    """Fail early, naming ``out``, when the report cannot be written there (a folder, or under a file)."""
    if out.is_dir():
        raise IsADirectoryError(f"cannot write the report to {str(out)!r}: it is a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"cannot write the report to {str(out)!r}: {str(parent)!r} is a file, "
                                         "not a folder")
            return


def _write(out: Path, page: str) -> None:
    try:
        atomic_write_text(out, page)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as e:
        raise type(e)(f"cannot write the report to {str(out)!r}: {e.strerror or e}") from e


def run(results_dir: str | os.PathLike, options: Options | None = None) -> RunResult:
    """Write one self-contained HTML report for a results folder.

    A section file that cannot be read (a truncated CSV, a corrupt PNG, a half-written JSON, a table without
    the columns its section needs) does not stop the report: its section shows a one-line note naming the file
    and why, and the file is listed in ``notes`` and ``summary["skipped_files"]``.

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
        ``files``: the HTML file; ``summary``: ``report`` (its path), ``sections`` (per stage folder ``"ok"``,
        ``"not run"`` (no such folder), ``"empty"`` (no tables or figures) or ``"incomplete"`` (some files
        could not be read)) and ``skipped_files`` (path: why); ``notes``: one line per section not run or
        empty and per file skipped.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        ``results_dir`` does not exist, or is a file.
    ReportInputError
        ``checks.json`` or ``run.json`` is not valid JSON or not the expected structure (names the file).
    IsADirectoryError, NotADirectoryError, PermissionError
        The report cannot be written to ``options.output`` (names it).
    """
    options = options or Options()
    root = Path(results_dir)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"results folder {str(root)!r} is a file, not a folder")
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {str(root)!r} does not exist")
    out = Path(options.output) if options.output else root / "report.html"
    _check_output(out)
    title = options.title
    rd = _Reader(root)
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='note'>Generated {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M UTC} from "
            f"<code>{html.escape(str(root))}</code>.</p>"]
    if (root / "run.json").exists():
        body += _run_html(root / "run.json")
    if (root / "checks.json").exists():
        body.append(_checks_html(root / "checks.json"))
    sections: dict[str, str] = {}
    notes: list[str] = []
    for folder, heading, text in SECTIONS:
        d = root / folder
        body.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        if not d.is_dir():
            sections[folder] = "not run"
            why = "is not a folder" if d.exists() else "not found"
            notes.append(f"{folder}/ {why}: section shown as not run")
            body.append("<p class='missing'>This stage was not run for these results"
                        + (f" (<code>{folder}</code> is not a folder)" if d.exists() else "") + ".</p>")
            continue
        n_skipped = len(rd.skipped)
        if folder == "analysis":
            parts = [_analysis_html(rd, d)]
        elif folder == "emergence":
            parts = [_emergence_html(rd, d), _generic_tables(rd, d, skip=set())]
        else:
            parts = [_generic_tables(rd, d, skip=set())]
        figs = [rd.img(p) for p in sorted(d.rglob("*.png"))]
        shown = [f for f in figs if f.startswith("<figure")]
        if figs:
            parts.append("<div>" + "".join(figs) + "</div>")
        content = "".join(parts)
        if len(rd.skipped) > n_skipped:
            sections[folder] = "incomplete"
        elif "<table" not in content and not shown:
            sections[folder] = "empty"
            notes.append(f"{d}/ has no tables or figures to show")
            content += f"<p class='missing'><code>{html.escape(folder)}/</code> has no tables or figures.</p>"
        else:
            sections[folder] = "ok"
        body.append(content)
    notes += [f"{path} could not be read ({why}); left out of the report" for path, why in rd.skipped.items()]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    _write(out, page)
    return RunResult(stage="report", out=out.parent, files=[out],
                     summary={"report": str(out), "sections": sections,
                              "skipped_files": {str(k): v for k, v in rd.skipped.items()}},
                     notes=notes)
