"""``capscale report``: one self-contained HTML file from a results folder, written to be read.

The folder is what ``capscale demo`` writes, or the outputs of the stage commands put side by side:

=====================  ==============================================================
``checks.json``        optional: named checks with ``passed`` and ``detail``
``run.json``           optional: what ran and how long (``capscale demo`` writes it)
``analysis/``          ``capscale analyze`` output (summary.csv, ordering.csv, correlations.parquet, ...)
``mass/``              ``capscale mass`` output (mass_predictions.csv, mass_fits.csv, figures)
``predict/``           ``capscale backtest`` output (``backtest.csv`` or ``*.csv``, ``*.json``, figures)
``emergence/``         ``capscale emergence`` output (``<task>.json``, verdicts.csv, figures/)
``store/``, ``tasks/`` optional: the score store and the items' JSONL (question text for the item inspector);
                       ``Options.store`` and ``Options.items`` point elsewhere
=====================  ==============================================================

The page reads top-down: **findings** first (the three questions capscale exists for, answered for this run
in words and numbers, each linking to its section), then one section per stage. Each section shows the figures
that answer its question (each with a one-line caption saying what to look for), then a compact summary table;
the raw tables are collapsed (``<details>``), never silently truncated, and downloadable from the page itself
(gzip-compressed CSV embedded in the file, decompressed by the browser). Uninformative output is labelled where
it appears: intervals spanning chance to 1, fits at a parameter bound, ``INSUFFICIENT_DATA`` verdicts.

Per-item views are interactive (Plotly, its JavaScript inlined from the optional ``plotly`` package; see
:mod:`capscale.plotting.interactive` for why): hovering a point shows the task, doc_id, the question and its
choices with their log-likelihoods at that checkpoint; a sortable table finds the items that do not scale.
Without ``plotly`` the same report is written with the static figures and the sortable table only.

Figures are embedded as base64 PNG (re-encoded with a 256-colour palette when that is smaller), and the page
loads nothing from outside. A missing section is shown as "not run" in one line rather than failing; a file
that cannot be read is named in its section and in the result's ``notes`` (never silently left out).
:func:`run` takes the folder and :class:`Options` and returns a :class:`~capscale.pipelines._base.RunResult`
naming the HTML file written.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import gzip
import html
import io
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from capscale._io import atomic_write_text, safe_name
from capscale.errors import InputError
from capscale.pipelines._base import RunResult, StageOptions

__all__ = ["Options", "run", "SECTIONS", "ReportInputError", "interval_is_uninformative"]

#: (folder, anchor, title, the question the section answers) in report order.
SECTIONS = [
    ("analysis", "chain", "1. Where predictability is lost along the chain",
     "For every item, the correlation across the family's models of each metric with log10 compute. Following "
     "Schaeffer et al. (2024), predictability should fall along the chain log p_vocab(correct) → p_choices(correct) "
     "→ −Brier → accuracy; the section shows how much is lost at each step and which items do not scale."),
    ("mass", "mass", "2. Correct vs incorrect probability mass",
     "How the vocabulary mass on the correct choice and on the incorrect choices moves with compute, per item, "
     "and the accuracy predicted from both masses for the held-out largest model."),
    ("predict", "predict", "3. Held-out models: predicted against observed",
     "Laws from compute to task loss to accuracy fitted on the smaller models and checked on the held-out largest "
     "one (leave-largest-out), with 90% intervals."),
    ("emergence", "emergence", "4. Which tasks look emergent, and why",
     "Is a sharp jump in a benchmark curve real, or made by a discontinuous metric? Verdict per task with its "
     "reasons (Schaeffer, Miranda and Koyejo 2023; BIG-bench breakthroughness; PassUntil)."),
]

#: The chain's metrics in order, with their labels.
CHAIN = [("log_p_vocab_correct", "log p_vocab(correct)"), ("p_choices_correct", "p_choices(correct)"),
         ("brier", "−Brier"), ("acc", "accuracy")]

#: Rows shown of a raw table inside its collapsed block (the rest is in its download).
RAW_ROWS = 40
#: Raw files larger than this (gzip-compressed, base64-encoded, in bytes) are named but not embedded.
MAX_EMBED_BYTES = 1_000_000

_CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1240px;
color:#1c2833;line-height:1.5;padding:1em 1.2em 3em}
h1{font-size:1.7em;margin:0.3em 0 0.1em} h2{border-bottom:2px solid #d5d8dc;padding-bottom:0.2em;margin-top:2.2em}
h3{font-size:1.1em;margin-top:1.6em} h4{font-size:0.95em;margin:1.2em 0 0.3em}
a{color:#0b5394}
.scroll{overflow-x:auto;max-width:100%;margin:0.5em 0}
.scroll.tall{max-height:460px;overflow-y:auto;border:1px solid #eaeded}
table{border-collapse:collapse;font-size:0.83em}
th,td{border:1px solid #d5d8dc;padding:3px 7px;text-align:right;vertical-align:top} th{background:#f4f6f7}
td.l,th.l,td:first-child,th:first-child{text-align:left}
td.wrap{text-align:left;min-width:16em;max-width:38em;white-space:normal}
table.sortable th{cursor:pointer;position:sticky;top:0} table.sortable th:after{content:" ⇅";color:#aab7b8}
table.sortable th[data-dir=asc]:after{content:" ▲";color:#1c2833} table.sortable th[data-dir=desc]:after{content:" ▼";color:#1c2833}
.figs{display:flex;flex-wrap:wrap;gap:0.8em 1.2em;align-items:flex-start}
figure{margin:0.4em 0;max-width:100%;flex:0 1 auto}
figure img{max-width:100%;height:auto;border:1px solid #eaeded;display:block}
figcaption{font-size:0.82em;color:#34495e;max-width:560px} figcaption code{font-size:0.9em}
.pass{color:#1e8449;font-weight:600}.fail{color:#b03a2e;font-weight:600}
.note{color:#566573;font-size:0.9em} .missing{color:#9a6700}
.flag{display:inline-block;background:#fdebd0;color:#7e5109;border-radius:3px;padding:0 5px;font-size:0.85em;
white-space:normal}
.flag.bad{background:#fadbd8;color:#922b21}
code{background:#f4f6f7;padding:0 3px;overflow-wrap:anywhere}
nav.toc{background:#f8f9f9;border:1px solid #e5e8e8;padding:0.6em 1.2em;margin:1em 0;font-size:0.92em}
nav.toc ul{margin:0.2em 0;padding-left:1.2em} nav.toc li{margin:0.15em 0}
.findings{border-left:4px solid #0072B2;padding:0.2em 1em;background:#f5f9fc}
.findings li{margin:0.35em 0}
details{margin:0.5em 0;border:1px solid #e5e8e8;border-radius:4px;padding:0.3em 0.8em}
details>summary{cursor:pointer;font-weight:600;color:#283747}
a.dl{font-size:0.85em;margin-left:0.6em}
.cs-wrap{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start;margin:0.6em 0}
.cs-plot{flex:1 1 600px;min-width:0;max-width:100%;min-height:460px}
.cs-insp{flex:0 1 330px;min-width:0;font-size:0.85em;border:1px solid #e5e8e8;padding:0.5em 0.8em;
overflow-wrap:anywhere;background:#fbfcfc}
.cs-insp table{font-size:0.95em} .cs-insp .gold{font-weight:700;color:#1e8449}
"""

_JS = r"""
(function(){
"use strict";
function bytes(s){const b=atob(s.trim()),u=new Uint8Array(b.length);for(let i=0;i<b.length;i++)u[i]=b.charCodeAt(i);return u;}
async function decode(id){
  const src=document.getElementById(id).textContent;
  const st=new Blob([bytes(src)]).stream().pipeThrough(new DecompressionStream('gzip'));
  return await new Response(st).text();
}
window.capscaleDecode=decode;
window.capscaleDownload=function(a){
  if(a.dataset.url){return true;}
  decode(a.dataset.src).then(function(t){
    a.dataset.url=URL.createObjectURL(new Blob([t],{type:a.dataset.type||'text/csv'}));
    a.href=a.dataset.url; a.click();});
  return false;
};
function sortBy(th){
  const row=th.parentNode, i=[...row.children].indexOf(th), tb=th.closest('table').tBodies[0];
  const asc=th.dataset.dir!=='asc';
  [...row.children].forEach(function(h){delete h.dataset.dir;}); th.dataset.dir=asc?'asc':'desc';
  const key=function(r){const c=r.cells[i];if(c.dataset.v===undefined)return c.textContent;
    return c.dataset.v===''?NaN:parseFloat(c.dataset.v);};
  const rows=[...tb.rows];
  rows.sort(function(a,b){const x=key(a),y=key(b);
    if(typeof x==='number'){if(isNaN(x)&&isNaN(y))return 0;if(isNaN(x))return 1;if(isNaN(y))return -1;return asc?x-y:y-x;}
    return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
  rows.forEach(function(r){tb.appendChild(r);});
}
window.capscaleSort=sortBy;
function esc(s){return String(s).replace(/[&<>"']/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c];});}
function inspect(el,I,cd){
  const key=cd[2], model=cd[1], it=I.items[key]||{}, ll=I.ll[key+'\x1e'+model];
  let h='<b>task</b> '+esc(it.task)+' · <b>doc_id</b> '+esc(it.doc_id)+'<br><b>checkpoint</b> '+esc(model||'–');
  h+= it.question==null ? '<p class="note">question text not available (pass the task items with <code>--items</code>)</p>'
                        : '<p>'+esc(it.question)+'</p>';
  if(ll){
    let best=-Infinity; ll.forEach(function(r){if(r[1]!==null&&r[1]>best)best=r[1];});
    h+='<table><tr><th>#</th><th class="l">choice</th><th>log-lik (nats)</th></tr>';
    ll.forEach(function(r){const txt=it.choices&&it.choices[r[0]]!==undefined?it.choices[r[0]]:'';
      h+='<tr><td>'+r[0]+(r[2]?' <span class="gold">✓</span>':'')+'</td><td class="l'+(r[2]?' gold':'')+'">'+esc(txt)+
         '</td><td>'+(r[1]===null?'−∞':r[1].toFixed(2))+(r[1]===best?' ◀':'')+'</td></tr>';});
    h+='</table><p class="note">✓ correct choice; ◀ highest log-likelihood (the model\'s answer)</p>';
  } else if(it.choices){
    h+='<ol start="0">'+it.choices.map(function(c,j){return '<li'+(j===it.gold?' class="gold"':'')+'>'+esc(c)+'</li>';}).join('')+'</ol>'+
       '<p class="note">log-likelihoods not available (no score store found; pass <code>--store</code>)</p>';
  }
  el.innerHTML=h;
}
function plots(){
  if(typeof Plotly==='undefined')return;
  document.querySelectorAll('div.cs-plot').forEach(function(div){
    const insp=document.getElementById(div.dataset.inspector);
    decode(div.dataset.spec).then(function(t){
      const spec=JSON.parse(t);
      return Plotly.newPlot(div,spec.figure.data,spec.figure.layout,{responsive:true,displaylogo:false}).then(function(){
        const show=function(ev){const p=ev.points[0];if(p&&p.customdata)inspect(insp,spec.inspector,p.customdata);};
        div.on('plotly_hover',show); div.on('plotly_click',show);
        div.dataset.rendered='1';});
    }).catch(function(e){div.dataset.rendered='error';div.textContent='interactive figure failed: '+e;console.error(e);});
  });
}
document.addEventListener('DOMContentLoaded',function(){
  document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){sortBy(th);});});
  plots();
});
})();
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


def _smaller_png(data: bytes) -> bytes:
    """``data`` re-encoded with a 256-colour palette when that is smaller (figures are line art), else ``data``."""
    try:
        from PIL import Image

        im = Image.open(io.BytesIO(data))
        if im.mode == "P":
            return data
        q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        buf = io.BytesIO()
        q.save(buf, "PNG", optimize=True)
        out = buf.getvalue()
        return out if len(out) < len(data) else data
    except Exception:  # noqa: BLE001 - Pillow missing or an image it cannot re-encode: embed as it is
        return data


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


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _slug(*parts: Any) -> str:
    """A stable HTML id from ``parts`` (``chain-synth_onehop``)."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", str(p)).strip("_") or "x" for p in parts)


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–" if v is None else _esc(v)
    return "–" if not math.isfinite(f) else fmt.format(f)


def _flag(text: str, bad: bool = False) -> str:
    return f"<span class='flag{' bad' if bad else ''}'>{_esc(text)}</span>"


def interval_is_uninformative(lower: float, upper: float, chance: float | None) -> bool:
    """Whether a predicted interval spans (nearly) the whole range from chance to 1: no forecast.

    The interval is uninformative when it reaches within 5% of the range ``[chance, 1]`` of both ends
    (``chance`` None: the range is ``[0, 1]``); e.g. with 4 choices, ``[0, 1]`` and ``[0.1, 1]`` are, ``[0.33, 1]``
    is not.
    """
    c = 0.0 if chance is None or not math.isfinite(chance) else float(chance)
    tol = 0.05 * max(1.0 - c, 1e-9)
    try:
        lo, hi = float(lower), float(upper)
    except (TypeError, ValueError):
        return False
    return bool(math.isfinite(lo) and math.isfinite(hi) and lo <= c + tol and hi >= 1.0 - tol)


class _Reader:
    """Reads the section files of one results folder; every file it cannot use is recorded in ``skipped``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.skipped: dict[Path, str] = {}

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def skip(self, path: Path, why: str) -> str:
        """Record ``path`` as unreadable and return the one-line HTML note shown in its section."""
        self.skipped[path] = why
        return f"<p class='missing'><code>{_esc(self.rel(path))}</code> could not be read: {_esc(why)}.</p>"

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
        except Exception as e:  # noqa: BLE001 - e.g. pyarrow's errors on a corrupt Parquet file
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

    def img(self, path: Path, caption: str = "") -> str:
        """The ``<figure>`` of a PNG with ``caption`` (what to look for), or the note saying why it cannot be shown."""
        try:
            data = path.read_bytes()
        except OSError as e:
            return self.skip(path, f"{type(e).__name__}: {e.strerror or e}")
        problem = _png_problem(data)
        if problem:
            return self.skip(path, problem)
        rel = _esc(self.rel(path))
        data = _smaller_png(data)
        cap = (f"{caption} " if caption else "") + f"<code>{rel}</code>"
        return (f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{rel}">'
                f"<figcaption>{cap}</figcaption></figure>")


class _Page:
    """What the page collects while its sections are built: embedded files, figure specs, ids."""

    def __init__(self, rd: _Reader, interactive: bool) -> None:
        self.rd = rd
        self.interactive = interactive
        self.blobs: list[str] = []
        self.n = 0
        self.embedded_bytes = 0

    def uid(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def embed(self, data: bytes, kind: str = "gz") -> str:
        """Embed ``data`` gzip-compressed and base64-encoded in a ``<script>`` block; returns its id."""
        bid = self.uid(kind)
        b = base64.b64encode(gzip.compress(data, 6, mtime=0)).decode("ascii")
        self.embedded_bytes += len(b)
        self.blobs.append(f"<script type='application/octet-stream' id='{bid}'>{b}</script>")
        return bid

    def spec(self, obj: Any) -> str:
        """Embed a JSON object (a figure spec) gzip-compressed; returns its id (the page's script decodes it)."""
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_jsonable)
        return self.embed(text.encode("utf-8"), kind="spec")

    def download(self, data: bytes, name: str, mime: str = "text/csv", where: str = "") -> str:
        """A link that downloads ``data`` as ``name`` (decompressed in the browser), or a note when too large.

        Files whose compressed, base64-encoded size exceeds :data:`MAX_EMBED_BYTES` are not embedded; the note
        names ``where`` (the file in the results folder) instead.
        """
        packed = base64.b64encode(gzip.compress(data, 6, mtime=0)).decode("ascii")
        if len(packed) > MAX_EMBED_BYTES:
            return (f"<span class='note'>not embedded ({len(packed) / 1e6:.1f} MB compressed, over the report's "
                    f"{MAX_EMBED_BYTES / 1e6:.0f} MB limit per file)" + (f"; it is <code>{_esc(where)}</code>" if where
                                                                           else "") + "</span>")
        bid = self.uid("gz")
        self.embedded_bytes += len(packed)
        self.blobs.append(f"<script type='application/octet-stream' id='{bid}'>{packed}</script>")
        return (f"<a class='dl' href='#' download='{_esc(name)}' data-src='{bid}' data-type='{mime}' "
                f"onclick='return capscaleDownload(this)'>download {_esc(name)}</a>")


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _html_table(df: pd.DataFrame, *, cls: str = "", wrap: Sequence[str] = (), raw_html: Sequence[str] = (),
                floatfmt: str = "{:.4g}", sort_values: bool = False) -> str:
    """An HTML table of ``df`` inside a horizontally scrolling box.

    ``wrap``: columns whose text wraps; ``raw_html``: columns already HTML; ``sort_values``: cells carry
    ``data-v`` with their number (for the sortable table).
    """
    numeric = {c: _numeric_column(df[c], c in raw_html) for c in df.columns}
    head = "".join(f"<th>{_esc(c)}</th>" if numeric[c] and c not in wrap else f"<th class='l'>{_esc(c)}</th>"
                   for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False, name=None):
        cells = []
        for c, v in zip(df.columns, rec):
            attr = ""
            if c in raw_html:
                txt = str(v)
            elif isinstance(v, (float, np.floating)):
                txt = "–" if not np.isfinite(v) else floatfmt.format(v)
                if sort_values:
                    attr = f" data-v='{'' if not np.isfinite(v) else repr(float(v))}'"
            elif isinstance(v, (bool, np.bool_)):
                txt = "yes" if v else "no"
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                txt = "–"
            else:
                txt = _esc(v)
                if sort_values and isinstance(v, (int, np.integer)):
                    attr = f" data-v='{int(v)}'"
            klass = " class='wrap'" if c in wrap else ("" if numeric[c] else " class='l'")
            cells.append(f"<td{klass}{attr}>{txt}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    c = f" class='{cls}'" if cls else ""
    box = "scroll tall" if "sortable" in cls else "scroll"
    return f"<div class='{box}'><table{c}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


_NUMBER = re.compile(r"^\s*[-+−]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def _numeric_column(col: pd.Series, is_html: bool) -> bool:
    """Whether a column holds numbers only (right-aligned); HTML columns are checked on their text."""
    if not is_html:
        return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    vals = [str(v) for v in col if str(v) not in ("–", "")]
    return bool(vals) and all(_NUMBER.match(v) for v in vals)


def _raw_block(page: _Page, path: Path, df: pd.DataFrame | None = None, *, label: str | None = None,
               data: bytes | None = None) -> str:
    """The collapsed raw view of one file: its first rows (saying "first N of M rows") and a download link."""
    rd = page.rd
    name = label or rd.rel(path)
    if data is None:
        try:
            data = (df.to_csv(index=False, float_format="%.6g").encode() if (df is not None and path.suffix == ".parquet")
                    else path.read_bytes())
        except OSError as e:
            return rd.skip(path, f"{type(e).__name__}: {e.strerror or e}")
    fname = Path(name).name if path.suffix != ".parquet" else Path(name).with_suffix(".csv").name
    mime = "application/json" if fname.endswith(".json") else "text/csv"
    link = page.download(data, fname, mime, where=rd.rel(path))
    if path.suffix == ".parquet":
        link = "converted to CSV, numbers to 6 significant digits: " + link
    if df is None:
        return f"<details class='raw'><summary>{_esc(name)} ({len(data) / 1e3:.0f} kB)</summary>{link}</details>"
    shown = df.head(RAW_ROWS)
    cut = (f"first {len(shown)} of {len(df)} rows; the download has all {len(df)}" if len(df) > len(shown)
           else f"all {len(df)} rows")
    return (f"<details class='raw'><summary>{_esc(name)} — {len(df)} rows × {df.shape[1]} columns</summary>"
            f"<p class='note'>{cut}. {link}</p>{_html_table(shown)}</details>")


# ------------------------------------------------------------------------------------------------
# inputs of the item inspector


def _read_item_text(paths: Iterable[Path], notes: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """Question text and choices per ``(task, doc_id)`` from JSONL task files (``<task>.jsonl``).

    Each line needs ``doc_id`` and ``choices``; the question is ``context``, ``question`` or ``query``. A line
    that is not such an object is counted in ``notes``, never fatal.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for f in paths:
        bad = 0
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            notes.append(f"{f}: item text not read ({type(e).__name__})")
            continue
        for line in lines:
            if not line.strip():
                continue
            try:
                it = json.loads(line)
                q = next(it[k] for k in ("context", "question", "query") if k in it)
                out[(f.stem, str(it["doc_id"]))] = {"question": str(q), "choices": list(it["choices"]),
                                                    "gold": it.get("gold")}
            except (json.JSONDecodeError, StopIteration, KeyError, TypeError):
                bad += 1
        if bad:
            notes.append(f"{f}: {bad} line(s) without doc_id, choices and a question were left out of the inspector")
    return out


@dataclass
class _Inputs:
    """The optional inputs of the per-item views: item text and per-choice log-likelihoods."""

    text: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    logliks: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    text_from: str | None = None
    store_from: str | None = None


def _inspector_inputs(root: Path, options: Options, analysis_source: str | None) -> _Inputs:
    inp = _Inputs()
    items = Path(options.items) if options.items else (root / "tasks" if (root / "tasks").is_dir() else None)
    if items is not None:
        files = sorted(items.glob("*.jsonl")) if items.is_dir() else [items]
        if items.exists() and files:
            inp.text = _read_item_text(files, inp.notes)
            inp.text_from = str(items)
        elif options.items:
            inp.notes.append(f"--items {items}: no <task>.jsonl files found; the inspector shows no question text")
    cands = [Path(options.store)] if options.store else [root / "store"] + (
        [Path(analysis_source)] if analysis_source else [])
    for s in cands:
        if not s.exists():
            if options.store:
                inp.notes.append(f"--store {s}: not found; the inspector shows no log-likelihoods")
            continue
        try:
            from capscale.data import store

            inp.logliks = store.read(s, validate_store=False,
                                     columns=["model_id", "task", "doc_id", "choice_idx", "is_correct", "loglik"])
            inp.store_from = str(s)
            break
        except Exception as e:  # noqa: BLE001 - the inspector is optional; the report still builds
            inp.notes.append(f"{s}: score store not read for the inspector ({type(e).__name__}: {e})")
    return inp


# ------------------------------------------------------------------------------------------------
# sections


@dataclass
class _Built:
    """One section's content: its HTML, its lines of the findings, its table-of-contents entries."""

    html: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)

    def add(self, part: str) -> None:
        if part:
            self.html.append(part)


def _task_of(path: Path, tasks: Sequence[str], *, prefix: bool = False) -> str | None:
    """The task a figure belongs to (``ccdf_<family>_<task>.png``, or ``<task>_P1_ladder.png`` with ``prefix``)."""
    stem = path.stem
    best = None
    for t in tasks:
        s = safe_name(t)
        hit = stem.startswith(s + "_") if prefix else (stem.endswith("_" + s) or stem == s)
        if hit and (best is None or len(safe_name(best)) < len(s)):
            best = t
    return best


def _figs(items: Sequence[str]) -> str:
    shown = [x for x in items if x]
    return "<div class='figs'>" + "".join(shown) + "</div>" if shown else ""


def _interactive_block(page: _Page, spec: dict[str, Any], caption: str) -> str:
    if not page.interactive:
        return ""
    sid = page.spec(spec)
    pid, iid = page.uid("plot"), page.uid("insp")
    return (f"<div class='cs-wrap'><div class='cs-plot' id='{pid}' data-spec='{sid}' data-inspector='{iid}'></div>"
            f"<div class='cs-insp' id='{iid}'><p class='note'>Hover a point: its task, doc_id, question and choices "
            f"with their log-likelihoods at that checkpoint appear here.</p></div></div>"
            f"<p class='note'>{caption} {_esc(spec.get('note', ''))}.</p>")


def _chain_section(page: _Page, d: Path, ctx: dict[str, Any], inp: _Inputs) -> _Built:
    rd, b = page.rd, _Built()
    summ = order = corr = items = None
    if (d / "summary.csv").exists():
        summ, note = rd.table(d / "summary.csv")
        b.add(note)
        if summ is not None:
            b.add(_missing_columns(rd, d / "summary.csv", summ, ["task", "metric", "method", "median"]))
            if {"task", "metric", "method", "median"} - set(summ.columns):
                summ = None
    if (d / "ordering.csv").exists():
        order, note = rd.table(d / "ordering.csv")
        b.add(note)
        if order is not None:
            n = _missing_columns(rd, d / "ordering.csv", order, ["method", "statistic", "holds"])
            b.add(n)
            if n:
                order = None
    if (d / "correlations.parquet").exists():
        corr, note = rd.table(d / "correlations.parquet")
        b.add(note)
    if (d / "per_item.parquet").exists():
        items, note = rd.table(d / "per_item.parquet")
        b.add(note)
    ctx["per_item"] = items
    # ----- the compact table and the findings
    if summ is not None and len(summ):
        sp = summ[summ["method"] == "spearman"] if "spearman" in set(summ["method"]) else summ
        med = sp.pivot_table(index="task", columns="metric", values="median", aggfunc="first")
        cols = [m for m, _ in CHAIN if m in med.columns]
        rows, lines = [], []
        for task, r in med.iterrows():
            row: dict[str, Any] = {"task": f"<a href='#{_slug('chain', task)}'>{_esc(task)}</a>"}
            for m, lab in CHAIN:
                if m in cols:
                    row[f"median r: {lab}"] = _num(r[m])
            holds = None
            if order is not None:
                o = order[(order["task"] == task) & (order["method"] == "spearman") & (order["statistic"] == "median")]
                if len(o) and pd.notna(o["holds"].iloc[0]):
                    holds = bool(o["holds"].iloc[0])
            row["ordering holds (Spearman, median)"] = ("–" if holds is None else
                                                        ("<span class='pass'>yes</span>" if holds else
                                                         "<span class='fail'>no</span>"))
            steps = [(cols[i], cols[i + 1], float(r[cols[i]]) - float(r[cols[i + 1]])) for i in range(len(cols) - 1)
                     if np.isfinite(r[cols[i]]) and np.isfinite(r[cols[i + 1]])]
            big = max(steps, key=lambda s: s[2]) if steps else None
            lab = dict(CHAIN)
            row["largest loss"] = (f"{lab[big[0]]} → {lab[big[1]]} (−{big[2]:.2f})" if big and big[2] > 0 else "–")
            rows.append(row)
            chain_txt = " → ".join(f"{lab[m]} {_num(r[m], '{:.2f}')}" for m in cols)
            lines.append(f"<a href='#{_slug('chain', task)}'>{_esc(task)}</a>: {chain_txt}"
                         + (f"; most is lost at {lab[big[0]]} → {lab[big[1]]}" if big and big[2] > 0 else "")
                         + ("" if holds is None else ("; ordering holds" if holds else "; ordering does <b>not</b> hold")))
        n_hold = sum(1 for r in rows if "pass" in r["ordering holds (Spearman, median)"])
        n_def = sum(1 for r in rows if r["ordering holds (Spearman, median)"] != "–")
        b.findings.append(
            f"<b>Where predictability is lost</b> (median per-item Spearman correlation with compute, "
            f"<a href='#chain'>§1</a>): the ordering log p_vocab ≥ p_choices ≥ −Brier ≥ accuracy holds for "
            f"{n_hold} of {n_def} task(s).<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>")
        table = pd.DataFrame(rows)
        ctx["chain_table"] = _html_table(table, raw_html=list(table.columns))
    else:
        ctx["chain_table"] = ""
    # ----- per task: figures first
    pngs = sorted(d.rglob("*.png"))
    tasks = sorted({*ctx["tasks"]})
    captions = {
        "ccdf": "Fraction of items whose score rises with compute with correlation above x, one line per metric. "
                "Look for: the lines moving left from log p_vocab to accuracy — that gap is the predictability "
                "lost along the chain.",
        "curves": "Task means (±2 SE over items) against compute, one line per model size. Look for: a smooth "
                  "log-likelihood beside a jumpy accuracy.",
        "mass": "Per item and checkpoint, mass on the correct choice against the incorrect ones, coloured by "
                "compute. Look for: points moving right (correct mass grows) faster than up.",
    }
    by_task: dict[str, list[str]] = {}
    other = []
    for p in pngs:
        t = _task_of(p, tasks)
        kind = p.stem.split("_", 1)[0]
        if t is None:
            other.append(rd.img(p))
            continue
        by_task.setdefault(t, []).append((["ccdf", "curves", "mass"].index(kind) if kind in captions else 9,
                                          rd.img(p, captions.get(kind, ""))))
    if ctx["chain_table"]:
        b.add("<h3 id='chain-summary'>Summary: median per-item Spearman correlation with compute</h3>"
              "<p class='note'>One row per task; “largest loss” is the step of the chain where the median "
              "correlation falls most.</p>" + ctx["chain_table"])
        b.toc.append(("chain-summary", "summary table"))
    for t in sorted(by_task):
        sid = _slug("chain", t)
        b.add(f"<h3 id='{sid}'>{_esc(t)}</h3>" + _figs([f for _, f in sorted(by_task[t], key=lambda x: x[0])]))
        b.toc.append((sid, t))
    for t in tasks:
        if t not in by_task and summ is not None and t in set(summ["task"]):
            sid = _slug("chain", t)
            b.add(f"<h3 id='{sid}'>{_esc(t)}</h3><p class='note'>No figures for this task in <code>analysis/</code>.</p>")
            b.toc.append((sid, t))
    if other:
        b.add("<h3>Other figures</h3>" + _figs(other))
    # ----- items you can inspect
    if corr is not None and {"family", "task", "metric", "method", "doc_id", "r"} <= set(corr.columns) and len(corr):
        from capscale.plotting import interactive

        tab = interactive.item_table(corr, items)
        b.add("<h3 id='chain-items'>Items you can inspect</h3>")
        b.toc.append(("chain-items", "items you can inspect"))
        largest = {}
        if items is not None and len(items):
            top = items.loc[items.groupby("task")["compute"].idxmax()]
            largest = dict(zip(top["task"].astype(str), top["model_id"].astype(str)))
        if "r_acc" in tab.columns and "r_log_p_vocab_correct" in tab.columns:
            spec = interactive.correlation_scatter(tab, text=inp.text, logliks=inp.logliks, inspect_model=largest)
            b.add(_interactive_block(
                page, spec, "One point per item: its Spearman correlation with compute of log p_vocab(correct) "
                            "(x) and of accuracy (y). Look for: points far below the diagonal — items whose "
                            "log-likelihood scales but whose accuracy does not. The inspector shows the "
                            "log-likelihoods at the largest checkpoint."))
        shown = tab
        textcol = [(inp.text.get((str(t), str(doc))) or {}).get("question", "") for t, doc in zip(tab["task"], tab["doc_id"])]
        shown = shown.assign(question=[q if len(q) <= 90 else q[:87] + "…" for q in textcol])
        cols = ["task", "doc_id", "question"] + [c for c in shown.columns if c.startswith("r_")] + (
            ["acc_largest"] if "acc_largest" in shown.columns else [])
        shown = shown[cols].rename(columns={f"r_{m}": f"r {lab}" for m, lab in CHAIN} | {
            "acc_largest": "acc (largest model)"})
        limit = 3000
        note = (f"All {len(shown)} items" if len(shown) <= limit else
                f"The {limit} items (of {len(shown)}) with the lowest r of log p_vocab(correct); the download has all")
        b.add(f"<p class='note'>{note}, sorted so the items that scale least come first; click a column to sort "
              f"by it (Spearman r with log10 compute; “–”: undefined, the score is constant across models). "
              f"{page.download(tab.to_csv(index=False).encode(), 'per_item_correlations.csv')}</p>"
              + _html_table(shown.head(limit), cls="sortable", wrap=["question"], floatfmt="{:.3f}",
                            sort_values=True))
    # ----- raw tables, collapsed
    raw = []
    for f in sorted(d.glob("*.csv")) + sorted(d.glob("*.json")):
        if f in rd.skipped:
            continue
        t = summ if f.name == "summary.csv" else order if f.name == "ordering.csv" else None
        if f.suffix == ".csv" and t is None:
            t, note = rd.table(f)
            if note:
                b.add(note)
                continue
        raw.append(_raw_block(page, f, t))
    for f in sorted(d.glob("*.parquet")):
        if f in rd.skipped:
            continue
        t = corr if f.name == "correlations.parquet" else items if f.name == "per_item.parquet" else rd.table(f)[0]
        if t is not None:
            raw.append(_raw_block(page, f, t))
    if raw:
        b.add("<h3>Raw tables</h3>" + "".join(raw))
    return b


def _missing_columns(rd: _Reader, path: Path, df: pd.DataFrame, need: Sequence[str]) -> str:
    miss = [c for c in need if c not in df.columns]
    return rd.skip(path, f"missing column(s) {miss}; has {list(df.columns)[:12]}") if miss else ""


def _k_bound() -> float:
    try:
        from capscale.analysis.mass import MassConfig

        return float(max(MassConfig().k_grid))
    except Exception:  # noqa: BLE001
        return 3.0


def _folder_tables(rd: Any, d: Path, b: _Built) -> dict[str, pd.DataFrame]:
    """Every ``*.csv`` of a results folder by file name; unreadable ones are noted in ``b``, not dropped silently."""
    tables: dict[str, pd.DataFrame] = {}
    for f in sorted(d.glob("*.csv")):
        t, note = rd.table(f)
        b.add(note)
        if t is not None:
            tables[f.name] = t
    return tables


def _mass_section(page: _Page, d: Path, ctx: dict[str, Any], inp: _Inputs) -> _Built:
    rd, b = page.rd, _Built()
    tables = _folder_tables(rd, d, b)
    pred = tables.get("mass_predictions.csv")
    fits = tables.get("mass_fits.csv")
    cov = tables.get("mass_covariation.csv")
    chance = ctx["chance"]
    kmax = _k_bound()
    # ----- summary table: held-out predictions
    summary_rows, lines = [], []
    need = ["task", "model_id", "kind", "acc_observed", "acc_predicted", "acc_lower", "acc_upper"]
    if pred is not None and not (miss := _missing_columns(rd, d / "mass_predictions.csv", pred, need)):
        for r in pred[pred["kind"] == "held-out"].itertuples(index=False):
            lo, hi, obs, pr = r.acc_lower, r.acc_upper, r.acc_observed, r.acc_predicted
            flags = []
            if interval_is_uninformative(lo, hi, chance.get(r.task)):
                flags.append(_flag("uninformative: the interval spans chance to 1", True))
            covered = bool(lo <= obs <= hi) if np.isfinite([lo, hi, obs]).all() else None
            w = getattr(r, "warnings", None)
            summary_rows.append({
                "task": f"<a href='#{_slug('mass', r.task)}'>{_esc(r.task)}</a>", "held-out model": _esc(r.model_id),
                "observed acc": _num(obs), "predicted acc": _num(pr), "90% interval": f"[{_num(lo)}, {_num(hi)}]",
                "covered": "–" if covered is None else ("yes" if covered else "<b>no</b>"),
                "notes": " ".join(flags) + (f" {_esc(w)}" if isinstance(w, str) and w else "")})
            lines.append(f"<a href='#{_slug('mass', r.task)}'>{_esc(r.task)}</a> {_esc(r.model_id)}: predicted "
                         f"{_num(pr)} [{_num(lo)}, {_num(hi)}], observed {_num(obs)}"
                         + ("" if covered is None else (" (inside the interval)" if covered else " (<b>outside</b> the interval)"))
                         + (" " + " ".join(flags) if flags else ""))
    elif pred is not None:
        b.add(miss)
    bound_lines = []
    if fits is not None and {"task", "quantity", "k"} <= set(fits.columns):
        for task, g in fits.groupby("task"):
            ks = g.groupby("quantity")["k"].first().astype(float)
            at = sorted(q for q, k in ks.items() if np.isclose(k, kmax))
            bad = g[g["status"].astype(str) != "ok"] if "status" in g.columns else g.iloc[:0]
            if at:
                bound_lines.append(f"{_esc(task)}: the saturation rate k of {', '.join(map(_esc, at))} "
                                   f"({len(at)} of {len(ks)} fitted quantities) is at the top of its grid "
                                   f"({kmax:g} per decade of compute) " + _flag("fit at a parameter bound"))
            if len(bad):
                bound_lines.append(f"{_esc(task)}: {len(bad)} of {len(g)} per-item fits with a status other than "
                                   "ok " + _flag("fit not usable", True))
    if lines:
        b.findings.append("<b>Accuracy predicted from the two masses</b> for the held-out largest model "
                          "(<a href='#mass'>§2</a>):<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>")
    # ----- per task figures, then the interactive view
    tasks = sorted(ctx["tasks"])
    caps = {"mass_scatter": "Correct against summed incorrect vocabulary mass, one point per item and checkpoint, "
                            "coloured by compute. Look for: the cloud moving right of the dashed equal-mass line "
                            "as compute grows.",
            "mass_slopes": "Per item, how fast the correct and the incorrect log-likelihood grow per decade of compute. "
                           "Look for: points below the diagonal (correct mass grows faster).",
            "mass_pred": "Accuracy predicted from the per-item mass laws (90% intervals) against the observed one. "
                         "Look for: the held-out square inside its bar."}
    by_task: dict[str, list[tuple[int, str]]] = {}
    other = []
    for p in sorted(d.rglob("*.png")):
        kind = next((k for k in caps if p.stem.startswith(k + "_")), None)
        t = _task_of(p, tasks)
        if t is None or kind is None:
            other.append(rd.img(p))
            continue
        by_task.setdefault(t, []).append((list(caps).index(kind), rd.img(p, caps[kind])))
    if summary_rows:
        tab = pd.DataFrame(summary_rows)
        b.add("<h3 id='mass-summary'>Summary: the held-out largest model</h3>"
              + _html_table(tab, raw_html=list(tab.columns)))
        b.toc.append(("mass-summary", "summary table"))
    if cov is not None and {"task", "slope_corr_pearson", "share_incorrect_faster"} <= set(cov.columns):
        c = cov[[x for x in ("task", "n_items", "slope_corr_pearson", "share_incorrect_faster", "median_slope_correct",
                             "median_slope_lse_incorrect") if x in cov.columns]]
        c = c.rename(columns={"slope_corr_pearson": "corr. of correct and incorrect slopes",
                              "share_incorrect_faster": "share of items whose incorrect mass grows faster",
                              "median_slope_correct": "median slope, correct (nats/decade)",
                              "median_slope_lse_incorrect": "median slope, incorrect (nats/decade)"})
        b.add("<h4>How the two masses move together</h4>" + _html_table(c, floatfmt="{:.3f}"))
    if bound_lines:
        b.add("<h4>Fits to read with care</h4><ul>" + "".join(f"<li>{x}</li>" for x in bound_lines) + "</ul>")
    items = ctx.get("per_item")
    for t in tasks:
        if t not in by_task and not (items is not None and t in set(items["task"])):
            continue
        sid = _slug("mass", t)
        b.add(f"<h3 id='{sid}'>{_esc(t)}</h3>" + _figs([f for _, f in sorted(by_task.get(t, []), key=lambda x: x[0])]))
        b.toc.append((sid, t))
        if items is not None and {"log_p_vocab_correct", "log_p_vocab_incorrect", "compute"} <= set(items.columns) \
                and t in set(items["task"]):
            from capscale.plotting import interactive

            spec = interactive.mass_scatter(items, t, text=inp.text, logliks=inp.logliks)
            b.add(_interactive_block(page, spec, "Interactive: the same mass scatter, one point per item and "
                                                 "checkpoint; hover to inspect an item, drag to zoom."))
    if other:
        b.add("<h3>Other figures</h3>" + _figs(other))
    raw = [_raw_block(page, d / n, t) for n, t in sorted(tables.items())]
    raw += [_raw_block(page, f) for f in sorted(d.glob("*.json")) + sorted(d.glob("*.md"))]
    b.add("<h3>Raw tables</h3>" + "".join(raw) if raw else "")
    return b


def _backtest_warnings(rd: _Reader, d: Path) -> dict[tuple[str, str, str], list[str]]:
    out: dict[tuple[str, str, str], list[str]] = {}
    for f in sorted(d.glob("*.json")):
        j, note = rd.json(f)
        if note or not isinstance(j, list):
            continue
        for r in j:
            if isinstance(r, dict) and r.get("warnings"):
                out[(str(r.get("task")), str(r.get("method")), str(r.get("heldout_model")))] = [str(w) for w in r["warnings"]]
    return out


def _predict_section(page: _Page, d: Path, ctx: dict[str, Any], inp: _Inputs) -> _Built:
    rd, b = page.rd, _Built()
    tables = _folder_tables(rd, d, b)
    warns = _backtest_warnings(rd, d)
    chance = ctx["chance"]
    need = {"task", "method", "heldout_model", "predicted", "actual", "lower", "upper"}
    bt = next((t for n, t in sorted(tables.items(), key=lambda kv: kv[0] != "backtest.csv") if need <= set(t.columns)),
              None)
    verdict_col = next((c for c in ("predictability", "verdict", "predictability_verdict") if bt is not None
                        and c in bt.columns), None)
    tasks = sorted(ctx["tasks"])
    by_task_tab: dict[str, str] = {}
    if bt is not None:
        for task, g in bt.groupby("task", sort=True):
            rows = []
            for r in g.itertuples(index=False):
                lo, hi, act, pr = r.lower, r.upper, r.actual, r.predicted
                flags = []
                unin = interval_is_uninformative(lo, hi, chance.get(task))
                if unin:
                    flags.append(_flag("uninformative: spans chance to 1", True))
                bound = [w.split(":", 1)[0] + ":" + w.split(":", 1)[1].split(" is at ")[0] for w in
                         warns.get((str(task), str(r.method), str(r.heldout_model)), []) if "at its bound" in w]
                if bound:
                    flags.append(_flag("fit at a parameter bound (" + "; ".join(bound) + ")"))
                err = getattr(r, "error", None)
                if isinstance(err, str) and err:
                    flags.append(_flag(f"failed: {err}", True))
                ok = np.isfinite([lo, hi, act]).all() if all(isinstance(v, (int, float)) for v in (lo, hi, act)) else False
                cov = bool(lo <= act <= hi) if ok else None
                row = {"method": _esc(r.method), "held-out model": _esc(r.heldout_model), "observed": _num(act),
                       "predicted": _num(pr), "90% interval": f"[{_num(lo)}, {_num(hi)}]",
                       "covered": "–" if cov is None else ("yes" if cov else "<b>no</b>") + (" (uninformative)" if unin else "")}
                if verdict_col:
                    row["predictability"] = _esc(getattr(r, verdict_col))
                row["notes"] = " ".join(flags)
                rows.append(row)
            tab = pd.DataFrame(rows)
            by_task_tab[str(task)] = _html_table(tab, raw_html=list(tab.columns))
            per_model = []
            for model, h in g.groupby("heldout_model", sort=False):
                pr = pd.to_numeric(h["predicted"], errors="coerce").dropna()
                lo, hi = pd.to_numeric(h["lower"], errors="coerce"), pd.to_numeric(h["upper"], errors="coerce")
                act = pd.to_numeric(h["actual"], errors="coerce").iloc[0]
                unin = [interval_is_uninformative(a, z, chance.get(task)) for a, z in zip(lo, hi)]
                inf = [(a <= act <= z) for a, z, u in zip(lo, hi, unin) if not u and np.isfinite([a, z, act]).all()]
                rng = (f"{pr.min():.3f}–{pr.max():.3f} (median {pr.median():.3f})" if len(pr) else "nothing")
                per_model.append(f"{_esc(model)} scored <b>{_num(act)}</b>; the {len(h)} methods predicted {rng}; "
                                 f"{sum(inf)} of {len(inf)} informative 90% intervals contain it"
                                 + (f", {sum(unin)} more span chance to 1 {_flag('no forecast', True)}" if any(unin)
                                    else ""))
            v = ""
            if verdict_col:
                vs = sorted({str(x) for x in g[verdict_col].dropna()})
                v = f" — predictability verdict: <b>{_esc(', '.join(vs) or '–')}</b>"
            b.findings.append(f"<a href='#{_slug('predict', task)}'>{_esc(task)}</a>{v}<ul>"
                              + "".join(f"<li>{x}</li>" for x in per_model) + "</ul>")
        lead = ("<b>Held-out models, predicted against observed</b> (leave-largest-out, <a href='#predict'>§3</a>)"
                + ("" if verdict_col else "; no predictability verdict in these results") + ":")
        b.findings = [lead + "<ul>" + "".join(f"<li>{x}</li>" for x in b.findings) + "</ul>"]
    cap = ("The ladder's runs used for the fit (black), the held-out runs' actual values (stars) and each method's "
           "prediction with its 90% interval. Look for: intervals that contain the star without spanning the "
           "whole axis.")
    by_task: dict[str, list[str]] = {}
    other = []
    for p in sorted(d.rglob("*.png")):
        t = _task_of(p, tasks)
        if t is None:
            other.append(rd.img(p))
        else:
            by_task.setdefault(t, []).append(rd.img(p, cap))
    for t in sorted(set(by_task) | set(by_task_tab)):
        sid = _slug("predict", t)
        b.add(f"<h3 id='{sid}'>{_esc(t)}</h3>" + _figs(by_task.get(t, []))
              + ("<h4>Predictions for the held-out models</h4>" + by_task_tab[t] if t in by_task_tab else ""))
        b.toc.append((sid, t))
    if other:
        b.add("<h3>Other figures</h3>" + _figs(other))
    raw = [_raw_block(page, d / n, t) for n, t in sorted(tables.items())]
    raw += [_raw_block(page, f) for f in sorted(d.glob("*.json")) if f not in rd.skipped]
    b.add("<h3>Raw tables</h3>" + "".join(raw) if raw else "")
    return b


_VERDICT_WORDS = {
    "INSUFFICIENT_DATA": "not enough data to decide",
    "METRIC_INDUCED": "the jump is made by the discontinuous metric; the continuous metrics are smooth",
    "GENUINE_TRANSITION_CANDIDATE": "a sharp jump the continuous metrics share: a candidate for real emergence",
    "SMOOTH": "no sharp jump",
    "INVERSE_OR_NONMONOTONE": "the score falls, or does not rise steadily, with compute",
}


def _verdict_html(v: Any) -> str:
    v = str(v)
    words = _VERDICT_WORDS.get(v)
    if v == "INSUFFICIENT_DATA":
        return f"<b>{_esc(v)}</b> {_flag(words or '', True)}"
    return f"<b>{_esc(v)}</b>" + (f" <span class='note'>({_esc(words)})</span>" if words else "")


def _emergence_section(page: _Page, d: Path, ctx: dict[str, Any], inp: _Inputs) -> _Built:
    rd, b = page.rd, _Built()
    reports: dict[str, dict] = {}
    for f in sorted(d.glob("*.json")):
        j, note = rd.json(f)
        b.add(note)
        if isinstance(j, dict) and "verdict" in j:
            reports[str(j.get("task", f.stem))] = j
    tables = _folder_tables(rd, d, b)
    rows, lines = [], []
    for task, j in sorted(reports.items()):
        reasons = [str(x) for x in j.get("reasons", [])]
        D = j.get("decision_metric")
        m = (j.get("metrics") or {}).get(D) or {}
        jci = m.get("J_ex_ci") or [None, None]
        rows.append({"task": f"<a href='#{_slug('emergence', task)}'>{_esc(task)}</a>",
                     "verdict": _verdict_html(j.get("verdict")),
                     "models": _esc(j.get("n_models")), "items": _esc(j.get("n_items")),
                     "decision metric": _esc(D or "–"),
                     "largest excess jump J_ex [CI]": f"{_num(m.get('J_ex'))} [{_num(jci[0])}, {_num(jci[1])}]"
                     if isinstance(jci, list) and len(jci) == 2 else _num(m.get("J_ex")),
                     "B/(n−1)": _num(m.get("B_norm"), "{:.2f}"),
                     "reasons": "<ul>" + "".join(f"<li>{_esc(x)}</li>" for x in reasons) + "</ul>"})
        last = reasons[-1] if reasons else "no reason recorded"
        lines.append(f"<a href='#{_slug('emergence', task)}'>{_esc(task)}</a>: {_verdict_html(j.get('verdict'))} — "
                     f"{_esc(last)}")
    if not reports and "verdicts.csv" in tables and {"task", "verdict"} <= set(tables["verdicts.csv"].columns):
        for r in tables["verdicts.csv"].itertuples(index=False):
            rows.append({"task": _esc(r.task), "verdict": _verdict_html(r.verdict),
                         "reasons": _esc(getattr(r, "reasons", ""))})
            lines.append(f"{_esc(r.task)}: {_verdict_html(r.verdict)}")
    if lines:
        b.findings.append("<b>Which tasks look emergent</b> (<a href='#emergence'>§4</a>):<ul>"
                          + "".join(f"<li>{x}</li>" for x in lines) + "</ul>")
    if rows:
        tab = pd.DataFrame(rows)
        b.add("<h3 id='emergence-summary'>Verdicts</h3>" + _html_table(tab, raw_html=list(tab.columns),
                                                                      wrap=["reasons"]))
        b.toc.append(("emergence-summary", "verdicts"))
    tasks = sorted(set(ctx["tasks"]) | set(reports))
    first = {"P1": "The benchmark curve of every metric against compute (item-bootstrap 95% bands, chance dashed). "
                   "Look for: a jump in accuracy that log-likelihood does not share.",
             "P3": "Per-item trajectories. Look for: items switching at different computes (smooth on average) or "
                   "together (a real jump)."}
    by_task: dict[str, list[tuple[str, str]]] = {}
    other = []
    for p in sorted(d.rglob("*.png")):
        t = _task_of(p, tasks, prefix=True)
        if t is None:
            other.append(rd.img(p))
            continue
        tag = p.stem[len(safe_name(t)) + 1:].split("_", 1)[0]
        by_task.setdefault(t, []).append((tag, rd.img(p, first.get(tag, ""))))
    for t in tasks:
        if t not in by_task and t not in reports:
            continue
        sid = _slug("emergence", t)
        figs = sorted(by_task.get(t, []), key=lambda x: (x[0] not in first, int(x[0][1:]) if x[0][1:].isdigit() else 99))
        main = [f for tag, f in figs if tag in first]
        rest = [f for tag, f in figs if tag not in first]
        verdict = f"<p>Verdict: {_verdict_html(reports[t].get('verdict'))}</p>" if t in reports else ""
        b.add(f"<h3 id='{sid}'>{_esc(t)}</h3>{verdict}" + _figs(main)
              + (f"<details><summary>{len(rest)} more diagnostic figures (latent, item τ, crossing points, fits, "
                 f"PassUntil, resolution)</summary>{_figs(rest)}</details>" if rest else ""))
        b.toc.append((sid, t))
    if other:
        b.add("<h3>Other figures</h3>" + _figs(other))
    raw = [_raw_block(page, d / n, t) for n, t in sorted(tables.items())]
    raw += [_raw_block(page, f) for f in sorted(d.glob("*.json")) if f not in rd.skipped]
    b.add("<h3>Raw tables</h3>" + "".join(raw) if raw else "")
    return b


_BUILDERS: dict[str, Callable[[_Page, Path, dict[str, Any], _Inputs], _Built]] = {
    "analysis": _chain_section, "mass": _mass_section, "predict": _predict_section, "emergence": _emergence_section}


# ------------------------------------------------------------------------------------------------
# the top of the page


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
        rows.append(f"<tr><td class='wrap'>{_esc(name)}</td><td class='{cls}'>{word}</td>"
                    f"<td class='wrap'>{_esc(c.get('detail', ''))}</td></tr>")
    return ("<h2 id='checks'>What the demo family shows</h2><div class='scroll'><table><thead><tr><th>check</th><th>result</th>"
            "<th>detail</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _run_html(path: Path) -> str:
    info = _load_json(path)
    if not isinstance(info, dict):
        raise ReportInputError(path, f"expected a JSON object, got {type(info).__name__}")
    stages = info.pop("stages", None)
    lines = "".join(f"<tr><td>{_esc(k)}</td><td class='wrap'>"
                    f"{_esc(json.dumps(v) if not isinstance(v, str) else v)}</td></tr>"
                    for k, v in info.items() if k not in ("checks", "failed", "report"))
    body = f"<div class='scroll'><table><tbody>{lines}</tbody></table></div>"
    if isinstance(stages, dict) and stages:
        rows = [{"stage": k, "status": v.get("status", "ok"), "seconds": v.get("seconds"),
                 "detail": v.get("error") or ", ".join(f"{a}={b}" for a, b in v.items()
                                                       if a in ("rows", "models", "tasks"))}
                if isinstance(v, dict) else {"stage": k, "status": str(v), "seconds": None, "detail": ""}
                for k, v in stages.items()]
        body += "<h4>Stages</h4>" + _html_table(pd.DataFrame(rows), wrap=["detail"])
    return f"<details id='run'><summary>What ran (command, inputs, stage times)</summary>{body}</details>"


def _context(root: Path) -> dict[str, Any]:
    """Tasks seen anywhere in the folder and the chance accuracy of each (mean 1/K over its items, when known)."""
    tasks: set[str] = set()
    chance: dict[str, float] = {}
    for rel in ("analysis/summary.csv", "mass/mass_predictions.csv", "predict/backtest.csv", "emergence/verdicts.csv"):
        try:
            tasks |= set(pd.read_csv(root / rel, usecols=["task"])["task"].astype(str))
        except Exception:  # noqa: BLE001 - unreadable files are reported by their section
            pass
    try:
        it = pd.read_parquet(root / "analysis" / "per_item.parquet", columns=["task", "doc_id", "n_choices"])
        it = it.drop_duplicates(["task", "doc_id"])
        chance = (1.0 / it["n_choices"].astype(float)).groupby(it["task"].astype(str)).mean().to_dict()
        tasks |= set(chance)
    except Exception:  # noqa: BLE001
        pass
    for f in sorted((root / "emergence").glob("*.json")) if (root / "emergence").is_dir() else []:
        try:
            j = json.loads(f.read_text(encoding="utf-8"))
            t = str(j["task"])
            tasks.add(t)
            c = ((j.get("metrics") or {}).get(j.get("decision_metric")) or {}).get("chance")
            if t not in chance and isinstance(c, (int, float)):
                chance[t] = float(c)
        except Exception:  # noqa: BLE001
            pass
    return {"tasks": sorted(tasks), "chance": chance}


@dataclass(frozen=True)
class Options(StageOptions):
    """Settings of ``capscale report``.

    Attributes
    ----------
    output : path-like, optional
        HTML file to write (default ``RESULTS_DIR/report.html``). Written atomically.
    title : str
        Page title.
    store : path-like, optional
        Score store whose per-choice log-likelihoods the item inspector shows (default: ``RESULTS_DIR/store``,
        else the store ``analysis/analysis.json`` names, when it exists).
    items : path-like, optional
        A folder of ``<task>.jsonl`` files (or one such file) with ``doc_id``, ``context`` (or ``question``) and
        ``choices`` per line: the question text of the item inspector (default: ``RESULTS_DIR/tasks``).
    interactive : bool
        Inline Plotly's JavaScript and draw the interactive per-item figures when ``plotly`` is installed
        (False: the static report only).
    """

    output: str | os.PathLike | None = None
    title: str = "capscale report"
    store: str | os.PathLike | None = None
    items: str | os.PathLike | None = None
    interactive: bool = True


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


def _toc(entries: list[tuple[str, str, list[tuple[str, str]]]]) -> str:
    lis = []
    for anchor, label, children in entries:
        sub = (" — " + " · ".join(f"<a href='#{a}'>{_esc(lab)}</a>" for a, lab in children) if children else "")
        lis.append(f"<li><a href='#{anchor}'>{_esc(label)}</a>{sub}</li>")
    return f"<nav class='toc' id='toc'><b>Contents</b><ul>{''.join(lis)}</ul></nav>"


def run(results_dir: str | os.PathLike, options: Options | None = None) -> RunResult:
    """Write one self-contained HTML report for a results folder.

    A section file that cannot be read (a truncated CSV, a corrupt PNG, a half-written JSON, a table without
    the columns its section needs) does not stop the report: its section shows a one-line note naming the file
    and why, and the file is listed in ``notes`` and ``summary["skipped_files"]``.

    Parameters
    ----------
    results_dir : path-like
        Folder with ``analysis/``, ``mass/``, ``predict/``, ``emergence/`` (any may be missing), an optional
        ``checks.json`` and ``run.json``, and optionally ``store/`` and ``tasks/`` for the item inspector.
    options : Options, optional
        Output file, title, the inspector's inputs (default ``Options()``).

    Returns
    -------
    RunResult
        ``files``: the HTML file; ``summary``: ``report`` (its path), ``sections`` (per stage folder ``"ok"``,
        ``"not run"`` (no such folder), ``"empty"`` (no tables or figures) or ``"incomplete"`` (some files
        could not be read)), ``skipped_files`` (path: why), ``interactive`` (whether the interactive figures are
        in the page), ``bytes`` (the file's size) and ``inspector`` (where the item text and log-likelihoods
        came from); ``notes``: one line per section not run or empty, per file skipped, and per input of the
        inspector that could not be used.

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
    run_block = _run_html(root / "run.json") if (root / "run.json").exists() else ""
    checks_block = _checks_html(root / "checks.json") if (root / "checks.json").exists() else ""

    from capscale.plotting import interactive

    js = interactive.plotly_js() if options.interactive else None
    page = _Page(rd, interactive=js is not None)
    ctx = _context(root)
    analysis_source = None
    try:
        analysis_source = json.loads((root / "analysis" / "analysis.json").read_text(encoding="utf-8")).get("source")
    except Exception:  # noqa: BLE001 - optional
        pass
    need_inspector = (root / "analysis").is_dir()
    inp = _inspector_inputs(root, options, analysis_source) if need_inspector else _Inputs()

    sections: dict[str, str] = {}
    notes: list[str] = []
    toc: list[tuple[str, str, list[tuple[str, str]]]] = [("findings", "Findings", [])]
    if checks_block:
        toc.append(("checks", "What the demo family shows", []))
    if run_block:
        toc.append(("run", "What ran", []))
    findings: list[str] = []
    body: list[str] = []
    for folder, anchor, heading, text in SECTIONS:
        d = root / folder
        body.append(f"<h2 id='{anchor}'>{_esc(heading)}</h2><p>{_esc(text)}</p>")
        if not d.is_dir():
            sections[folder] = "not run"
            why = "is not a folder" if d.exists() else "not found"
            notes.append(f"{folder}/ {why}: section shown as not run")
            body.append("<p class='missing'>This stage was not run for these results"
                        + (f" (<code>{folder}</code> is not a folder)" if d.exists() else
                           f" (no <code>{folder}/</code> folder)") + ".</p>")
            findings.append(f"<span class='missing'>{_esc(heading.split('. ', 1)[1])}: not run for these results "
                            f"(<a href='#{anchor}'>§{heading.split('.', 1)[0]}</a>).</span>")
            toc.append((anchor, heading, []))
            continue
        n_skipped = len(rd.skipped)
        built = _BUILDERS[folder](page, d, ctx, inp)
        content = "".join(built.html)
        if len(rd.skipped) > n_skipped:
            sections[folder] = "incomplete"
        elif "<table" not in content and "<figure" not in content:
            sections[folder] = "empty"
            notes.append(f"{d}/ has no tables or figures to show")
            content += f"<p class='missing'><code>{_esc(folder)}/</code> has no tables or figures.</p>"
        else:
            sections[folder] = "ok"
        if sections[folder] == "incomplete":
            bad = [rd.rel(p) for p in list(rd.skipped)[n_skipped:]]
            content = (f"<p class='missing'>{len(bad)} file(s) of this section could not be read: "
                       + ", ".join(f"<code>{_esc(x)}</code>" for x in bad) + ".</p>" + content)
        findings += built.findings
        if not built.findings:
            findings.append(f"<span class='note'>{_esc(heading.split('. ', 1)[1])}: nothing to summarise "
                            f"(<a href='#{anchor}'>§{heading.split('.', 1)[0]}</a>).</span>")
        body.append(content)
        toc.append((anchor, heading, built.toc))
    notes += [f"{path} could not be read ({why}); left out of the report" for path, why in rd.skipped.items()]
    notes += inp.notes
    if options.interactive and js is None:
        notes.append("plotly is not installed: the report has the static figures only "
                     "(pip install 'capscale[report]' for the interactive per-item figures)")
    inter = ("" if page.interactive else
             "<p class='note'>Interactive per-item figures are off: "
             + ("the optional <code>plotly</code> package is not installed (<code>pip install "
                "'capscale[report]'</code>); " if options.interactive else "turned off for this report; ")
             + "the static figures and the sortable item table show the same data.</p>")
    srcs = []
    if inp.text_from:
        srcs.append(f"question text from <code>{_esc(inp.text_from)}</code>")
    if inp.store_from:
        srcs.append(f"log-likelihoods from <code>{_esc(inp.store_from)}</code>")
    head = [f"<h1>{_esc(title)}</h1>",
            f"<p class='note'>Generated {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M UTC} by <code>capscale report</code> "
            f"from <code>{_esc(root)}</code>" + (f"; item inspector: {', '.join(srcs)}" if srcs else "") + ".</p>",
            "<h2 id='findings'>Findings</h2><div class='findings'><ul>"
            + "".join(f"<li>{x}</li>" for x in findings) + "</ul></div>" + inter,
            _toc(toc),
            checks_block, run_block]
    script = f"<script>{js}</script>" if js else ""
    html_page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                 f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_esc(title)}</title>"
                 f"<style>{_CSS}</style>{script}<script>{_JS}</script></head><body>{''.join(head)}{''.join(body)}"
                 f"{''.join(page.blobs)}</body></html>")
    _write(out, html_page)
    return RunResult(stage="report", out=out.parent, files=[out],
                     summary={"report": str(out), "sections": sections,
                              "skipped_files": {str(k): v for k, v in rd.skipped.items()},
                              "interactive": page.interactive, "bytes": len(html_page.encode()),
                              "inspector": {"items": inp.text_from, "store": inp.store_from}},
                     notes=notes)
