"""``capscale ingest lm-eval``: convert lm-eval ``--log_samples`` output into the score store.

Accepts the JSONL files lm-eval writes (``<output_path>/<model>/samples_<task>_<date>.jsonl``, any 0.4.x: values
of ``resps``/``filtered_resps`` as strings such as ``"-11.52"``/``"False"`` or as numbers, ``arguments`` as
``{"gen_args_i": {"arg_0": ctx, "arg_1": cont}}`` or as lists) and the in-memory sample dicts of
``simple_evaluate(...)["samples"]``. Model metadata (N, D, step, family) comes from a family spec.

Per sample: ``loglik`` = ``filtered_resps[i][0]`` (else ``resps[i][0][0]``) in nats, ``is_greedy`` its second
element; choices are recovered from ``arguments`` (normal tasks: the continuations without the leading target
delimiter " "; multiple-input tasks such as WinoGrande, where the continuation is shared: the contexts); the gold
index from ``target`` (an index, or a choice string). For multiple-input samples lm-eval logs the shared
continuation as ``target``, so gold is recovered from the logged ``acc`` (exact for two choices, and for any
number of choices when acc = 1); other samples whose gold cannot be recovered are excluded and counted.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from capscale.data import store
from capscale.data.family import Checkpoint, FamilySpec, load_spec
from capscale.errors import CapscaleError, InputError

__all__ = ["IngestError", "IngestReport", "samples_to_rows", "read_samples_file", "ingest_lm_eval",
           "find_sample_files", "task_from_filename"]

_SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-:.]+)\.jsonl$")


class IngestError(CapscaleError, ValueError):
    """The log cannot be converted; the message names the file, line and task."""


@dataclass
class IngestReport:
    """What was converted and what was left out."""

    files: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    n_rows: int = 0
    n_items: int = 0
    excluded: dict[str, list[str]] = field(default_factory=dict)

    def exclude(self, reason: str, where: str) -> None:
        self.excluded.setdefault(reason, []).append(where)

    def summary(self) -> str:
        ex = "; ".join(f"{k}: {len(v)} (e.g. {v[:3]})" for k, v in self.excluded.items()) or "none"
        return (f"{len(self.files)} file(s), {self.n_items} item(s), {self.n_rows} row(s) -> {len(self.shards)} "
                f"shard(s); excluded: {ex}")


def task_from_filename(path: str | os.PathLike) -> str | None:
    """``samples_<task>_<date>.jsonl`` -> ``<task>``."""
    m = _SAMPLES.match(Path(path).name)
    return m.group("task") if m else None


def find_sample_files(path: str | os.PathLike) -> list[Path]:
    """The ``samples_*.jsonl`` files under ``path`` (or ``path`` itself)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"lm-eval log {str(p)!r} does not exist")
    files = sorted(p.rglob("samples_*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no samples_*.jsonl files under {str(p)!r} (run lm-eval with --log_samples)")
    return files


def _pair(v: Any) -> tuple[float, bool]:
    """(loglik, is_greedy) from any logged form: tuple/list, strings, or a string repr of a tuple."""
    if isinstance(v, str):
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            raise InputError(f"cannot parse response {v!r}") from None
    if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], (list, tuple, str)):
        return _pair(v[0])
    if not isinstance(v, (list, tuple)) or len(v) < 2:
        raise InputError(f"expected (loglik, is_greedy), got {v!r}")
    ll, g = v[0], v[1]
    ll = float(ll)
    if isinstance(g, str):
        g = g.strip().lower() in {"true", "1"}
    return ll, bool(g)


def _arguments(args: Any) -> list[tuple[str, str]]:
    if isinstance(args, dict):  # {"gen_args_0": {"arg_0": ctx, "arg_1": cont}, ...}
        keys = sorted(args, key=lambda k: int(re.sub(r"\D", "", k) or 0))
        return [(str(args[k]["arg_0"]), str(args[k]["arg_1"])) for k in keys]
    out = []
    for a in args:
        if isinstance(a, dict):
            out.append((str(a["arg_0"]), str(a["arg_1"])))
        else:
            out.append((str(a[0]), str(a[1])))
    return out


def samples_to_rows(samples: Iterable[dict[str, Any]], *, task: str, checkpoint: Checkpoint,
                    report: IngestReport | None = None, source: str = "lm-eval-log",
                    target_delimiter: str = " ") -> pd.DataFrame:
    """Store rows from lm-eval sample dicts of one task and one model.

    Parameters
    ----------
    samples : iterable of dict
        As in ``simple_evaluate(...)["samples"][task]`` or one JSONL line each.
    task : str
    checkpoint : Checkpoint
        Supplies model_id, family, params, tokens, step, revision.
    report : IngestReport, optional
        Collects excluded samples.
    target_delimiter : str
        Removed from the front of continuations to recover the choice strings (``n_chars``/``n_bytes``).
    """
    report = report if report is not None else IngestReport()
    rows: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for k, s in enumerate(samples):
        doc_id = s.get("doc_id", k)
        where = f"{task} doc_id={doc_id}"
        if s.get("filter", "none") not in ("none", None) and doc_id in seen:
            report.exclude("extra_filter", where)
            continue
        if doc_id in seen:
            report.exclude("duplicate_doc_id", where)
            continue
        try:
            args = _arguments(s["arguments"])
            resps = s.get("filtered_resps")
            if resps is None:  # [[(ll, greedy)], ...]: one list of repeats per request; _pair unwraps it
                resps = s["resps"]
            pairs = [_pair(r) for r in resps]
        except (KeyError, TypeError, ValueError) as e:
            raise IngestError(f"{where}: malformed sample ({e})") from e
        if len(pairs) != len(args):
            raise IngestError(f"{where}: {len(args)} arguments but {len(pairs)} responses")
        # acc_mutual_info: k conditional requests then k unconditional ("", cont) ones
        n = len(args)
        if n % 2 == 0 and n >= 2 and all(c == "" for c, _ in args[n // 2:]) and any(c for c, _ in args[: n // 2]):
            args, pairs = args[: n // 2], pairs[: n // 2]
            n = len(args)
        conts = [c for _, c in args]
        ctxs = [c for c, _ in args]
        multiple_input = n > 1 and len(set(conts)) == 1 and len(set(ctxs)) > 1
        if multiple_input:
            choices = ctxs
        else:
            choices = [c[len(target_delimiter):] if target_delimiter and c.startswith(target_delimiter) else c
                       for c in conts]
        lls = np.array([p[0] for p in pairs])
        gold = _gold(s, choices, conts, lls, multiple_input)
        if gold is None:
            report.exclude("gold_not_recoverable", where)
            continue
        seen.add(doc_id)
        for j, (choice, (ll, greedy)) in enumerate(zip(choices, pairs, strict=True)):
            rows.append({"model_id": checkpoint.model_id, "family": checkpoint.family,
                         "params": checkpoint.params, "tokens": checkpoint.tokens, "step": checkpoint.step,
                         "task": task, "doc_id": doc_id, "choice_idx": j, "is_correct": j in gold,
                         "loglik": ll, "is_greedy": greedy, "n_chars": len(choice),
                         "n_bytes": len(choice.encode("utf-8")), "revision": checkpoint.revision,
                         "task_source": source, "multiple_input": multiple_input, "multi_gold": len(gold) > 1,
                         "backend": "lm-eval-log"})
        report.n_items += 1
    df = pd.DataFrame(rows)
    for col in ("step", "revision"):
        if col in df and df[col].isna().all():
            df = df.drop(columns=col)
    return df


def _gold(s: dict[str, Any], choices: list[str], conts: list[str], lls: np.ndarray,
          multiple_input: bool) -> list[int] | None:
    k = len(choices)
    target = s.get("target")
    if not multiple_input and target is not None:
        ts = target if isinstance(target, list) else [target]
        out = []
        for t in ts:
            if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
                out.append(int(t))
                continue
            t = str(t)
            if re.fullmatch(r"-?\d+", t.strip()):
                out.append(int(t.strip()))
            elif t in choices:
                out.append(choices.index(t))
            elif t in conts:
                out.append(conts.index(t))
            else:
                try:  # a list logged as a string, e.g. "[0, 2]"
                    v = ast.literal_eval(t)
                    out.extend(int(x) for x in (v if isinstance(v, (list, tuple)) else [v]))
                except (ValueError, SyntaxError, TypeError):
                    return None
        return out if out and all(0 <= g < k for g in out) else None
    acc = s.get("acc")
    if acc is None:
        return None
    acc = float(acc)
    pred = int(np.argmax(lls))
    if acc == 1.0:
        return [pred]
    if k == 2:
        return [1 - pred]
    return None


def read_samples_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse one lm-eval samples JSONL file (error naming file and line)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise IngestError(f"{path}:{i + 1}: invalid JSON ({e})") from e
    return out


def _sanitize(s: str) -> str:
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", s)


def _match_checkpoint(spec: FamilySpec, file: Path, model_id: str | None) -> Checkpoint:
    if model_id:
        return spec.select([model_id]).checkpoints[0]
    if len(spec.checkpoints) == 1:
        return spec.checkpoints[0]
    # lm-eval writes <output_path>/<sanitized model name>/samples_*.jsonl, results_*.json beside it
    cands = []
    for res in sorted(file.parent.glob("results_*.json")):
        try:
            margs = json.loads(res.read_text()).get("config", {}).get("model_args", "")
        except (json.JSONDecodeError, OSError):
            continue
        margs = margs if isinstance(margs, str) else ",".join(f"{k}={v}" for k, v in dict(margs).items())
        kv = dict(x.split("=", 1) for x in margs.split(",") if "=" in x)
        pre, rev = kv.get("pretrained"), kv.get("revision")
        cands = [c for c in spec.checkpoints if pre and (c.path == pre or Path(c.path).name == Path(pre).name
                                                            or c.path.rstrip("/").endswith(pre.rstrip("/")))
                 and (rev is None or c.revision in (None, rev))]
        if len(cands) == 1:
            return cands[0]
    folder = file.parent.name
    cands = [c for c in spec.checkpoints if _sanitize(c.path) == folder or folder.endswith(_sanitize(Path(c.path).name))
             or c.model_id == folder]
    if len(cands) == 1:
        return cands[0]
    raise IngestError(f"{file}: cannot tell which checkpoint of family {spec.family!r} wrote it "
                      f"({len(spec.checkpoints)} checkpoints; folder {folder!r}); pass --model-id")


def ingest_lm_eval(path: str | os.PathLike, family: str | os.PathLike | FamilySpec, out: str | os.PathLike, *,
                   model_id: str | None = None, tasks: Sequence[str] | None = None,
                   overwrite: bool = False) -> IngestReport:
    """Convert lm-eval ``--log_samples`` JSONL files under ``path`` into store shards in ``out``.

    Parameters
    ----------
    path : path
        A samples JSONL file or a folder searched recursively for ``samples_*.jsonl``.
    family : path or FamilySpec
        Spec supplying N, D, step, family for the checkpoint(s).
    out : path
        Store directory (one shard per checkpoint x task, written atomically).
    model_id : str, optional
        The spec checkpoint that produced the log (needed when the spec has several and the log folder does
        not identify one).
    tasks : list of str, optional
        Convert only these tasks.
    overwrite : bool
        Replace existing shards (default: skip them).

    Returns
    -------
    IngestReport
    """
    spec = family if isinstance(family, FamilySpec) else load_spec(family)
    report = IngestReport()
    for f in find_sample_files(path):
        task = task_from_filename(f)
        if task is None:
            raise IngestError(f"{f}: file name does not follow lm-eval's samples_<task>_<date>.jsonl")
        if tasks and task not in tasks:
            continue
        ck = _match_checkpoint(spec, f, model_id)
        report.files.append(str(f))
        target = Path(out) / store.shard_name(ck.model_id, task)
        store.migrate_legacy_shard(out, ck.model_id, task)  # an old-named shard of this pair counts as this one
        if target.exists() and not overwrite:
            report.exclude("shard_exists_skipped", str(target))
            continue
        df = samples_to_rows(read_samples_file(f), task=task, checkpoint=ck, report=report,
                             source=f"lm-eval-log:{f.name}")
        if df.empty:
            report.exclude("no_rows", str(f))
            continue
        try:
            p = store.write_shard(df, out)
        except store.StoreValidationError as e:
            raise IngestError(f"{f}: converted rows fail validation: {e}") from e
        report.shards.append(str(p))
        report.n_rows += len(df)
    return report
