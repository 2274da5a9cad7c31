"""Family specs: which checkpoints to evaluate, with their parameter count N and training tokens D.

A spec is a small YAML file (or a CSV with the same fields, one checkpoint per row)::

    family: pythia
    tokens_per_step: 2097152          # optional: D = step * tokens_per_step where tokens is not given
    params_kind: total                # optional, free text (total / non-embedding)
    checkpoints:
      - path: EleutherAI/pythia-410m  # local folder (relative to the spec file) or hub id
        revision: step13000           # optional
        params: 405334016             # N
        tokens: 27262976000           # D (or give step and a family-level tokens_per_step)
        step: 13000                   # optional
        model_id: pythia-410m@step13000   # optional, derived from path/revision otherwise
        gguf_file: model.Q4_1.gguf    # optional: load a GGUF file inside the folder
        dtype: float32                # optional load dtype for this checkpoint

:func:`scan` builds a spec from local HF-format folders with Pythia/OLMo-style ``stepN`` names and reports the
fields it could not infer.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from capscale.errors import CapscaleError

__all__ = [
    "Checkpoint",
    "FamilySpec",
    "FamilySpecError",
    "ScanResult",
    "load_spec",
    "spec_from_checkpoint",
    "scan",
    "count_params",
    "WEIGHT_FILES",
    "SPEC_SUFFIXES",
]

#: A folder counts as a checkpoint when it has ``config.json`` and one of these (scoring.md §9.4).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
_REV = re.compile(r"^(?:(stage\d+)-)?(?:ingredient(\d+)-)?step(\d+)(?:-tokens(\d+(?:\.\d+)?)B)?$")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([mbk])\b", re.IGNORECASE)
#: Names ending in these are family spec files (``.json`` is read as YAML, of which it is a subset).
SPEC_SUFFIXES = (".yaml", ".yml", ".csv", ".json")
_FIELDS = ("model_id", "path", "revision", "params", "tokens", "step", "gguf_file", "dtype", "compute", "seed",
           "tokenizer")


class FamilySpecError(CapscaleError, ValueError):
    """A family spec is invalid; the message names the spec file and the checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a family.

    Attributes
    ----------
    model_id : str
        Unique identifier within the store.
    path : str
        Local folder (absolute after loading a spec) or hub id.
    params : int
        N, parameters.
    tokens : int
        D, training tokens seen.
    step : int or None
        Training step.
    revision : str or None
        Hub revision (branch, tag or commit).
    gguf_file : str or None
        GGUF file name inside ``path`` to load instead of safetensors/bin weights.
    dtype : str or None
        Load dtype for this checkpoint (``float32``/``bfloat16``); the run's ``--dtype`` wins when given.
    compute : float or None
        Training compute in FLOPs; the store fills ``6 * params * tokens`` when missing.
    seed : int or None
        Training seed.
    tokenizer : str or None
        Tokenizer folder, when not inside ``path``.
    family : str
        Family name (copied from the spec).
    """

    model_id: str
    path: str
    params: int
    tokens: int
    step: int | None = None
    revision: str | None = None
    gguf_file: str | None = None
    dtype: str | None = None
    compute: float | None = None
    seed: int | None = None
    tokenizer: str | None = None
    family: str = ""

    def is_local(self) -> bool:
        """Whether ``path`` is an existing local folder or file."""
        return Path(self.path).expanduser().exists()

    def looks_like_hub_id(self) -> bool:
        """``owner/name`` (no leading ``/``, ``.`` or ``~``, exactly one slash) that is not a local path."""
        p = self.path
        return (not self.is_local() and not p.startswith(("/", ".", "~")) and p.count("/") == 1
                and "\\" not in p)

    def check_location(self) -> None:
        """Raise :class:`FileNotFoundError` naming the checkpoint if its local path does not exist."""
        if self.is_local():
            if self.gguf_file and not (Path(self.path) / self.gguf_file).is_file():
                raise FileNotFoundError(f"checkpoint {self.model_id!r}: GGUF file {self.gguf_file!r} not found in "
                                        f"{self.path!r}")
            return
        if not self.looks_like_hub_id():
            raise FileNotFoundError(f"checkpoint {self.model_id!r}: path {self.path!r} does not exist (and is not "
                                    "a hub id of the form owner/name)")


@dataclass(frozen=True)
class FamilySpec:
    """A family: a name and its checkpoints.

    Attributes
    ----------
    family : str
    checkpoints : tuple of Checkpoint
    tokens_per_step : int or None
        Used to derive D = step x tokens_per_step where a checkpoint gives no ``tokens``.
    params_kind : str or None
        What ``params`` counts (``total``, ``non-embedding``, ...), as declared by the spec.
    source : str or None
        The file the spec was read from.
    """

    family: str
    checkpoints: tuple[Checkpoint, ...]
    tokens_per_step: int | None = None
    params_kind: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        ids = [c.model_id for c in self.checkpoints]
        dup = sorted({m for m in ids if ids.count(m) > 1})
        if dup:
            raise FamilySpecError(f"family spec {self.source or self.family!r}: duplicate model_id(s) {dup}; "
                                  "give each checkpoint a distinct model_id")
        if not self.checkpoints:
            raise FamilySpecError(f"family spec {self.source or self.family!r} lists no checkpoints")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (YAML-ready)."""
        out: dict[str, Any] = {"family": self.family}
        if self.tokens_per_step:
            out["tokens_per_step"] = self.tokens_per_step
        if self.params_kind:
            out["params_kind"] = self.params_kind
        out["checkpoints"] = [{k: v for k, v in asdict(c).items() if v is not None and k != "family"}
                              for c in self.checkpoints]
        return out

    def select(self, model_ids: Iterable[str]) -> FamilySpec:
        """A spec with only the given checkpoints (error naming unknown ids)."""
        want = list(model_ids)
        known = {c.model_id: c for c in self.checkpoints}
        missing = [m for m in want if m not in known]
        if missing:
            raise FamilySpecError(f"unknown model_id(s) {missing}; the spec has {sorted(known)[:20]}")
        return replace(self, checkpoints=tuple(known[m] for m in want))


# ---------------------------------------------------------------------------------------------- loading


def _int_or_none(v: Any, what: str, where: str) -> int | None:
    if v is None or (isinstance(v, str) and v.strip() in {"", "null", "None", "nan"}):
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise FamilySpecError(f"{where}: {what} must be a number, got {v!r}") from None
    if not math.isfinite(f) or f != round(f):
        raise FamilySpecError(f"{where}: {what} must be an integer, got {v!r}")
    return int(round(f))


def _str_or_none(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    s = str(v).strip()
    return s or None


def default_model_id(path: str, revision: str | None = None) -> str:
    """``name@revision`` for hub ids, ``parent-stepN`` for local ``.../name/stepN`` folders, else the name."""
    p = Path(str(path).rstrip("/"))
    name = p.name
    if revision:
        return f"{name}@{revision}"
    if _REV.match(name) and p.parent.name:
        return f"{p.parent.name}-{name}"
    return name


def _checkpoint(raw: dict[str, Any], i: int, family: str, tokens_per_step: int | None, base: Path | None,
                src: str) -> Checkpoint:
    where = f"family spec {src!r}, checkpoint {i}"
    unknown = sorted(set(raw) - set(_FIELDS) - {"family"})
    if unknown:
        raise FamilySpecError(f"{where}: unknown field(s) {unknown}; known: {list(_FIELDS)}")
    path = _str_or_none(raw.get("path"))
    if not path:
        raise FamilySpecError(f"{where}: no path")
    if base is not None and not Path(path).expanduser().is_absolute():
        cand = base / path
        if cand.exists() or path.startswith((".", "..")) or path.count("/") != 1:
            path = str(cand.resolve())
    revision = _str_or_none(raw.get("revision"))
    model_id = _str_or_none(raw.get("model_id")) or default_model_id(path, revision)
    where = f"family spec {src!r}, checkpoint {model_id!r}"
    params = _int_or_none(raw.get("params"), "params", where)
    tokens = _int_or_none(raw.get("tokens"), "tokens", where)
    step = _int_or_none(raw.get("step"), "step", where)
    if tokens is None and step is not None and tokens_per_step:
        tokens = step * tokens_per_step
    missing = [n for n, v in (("params (N)", params), ("tokens (D)", tokens)) if v is None]
    if missing:
        hint = " (or give step and a family-level tokens_per_step)" if tokens is None else ""
        raise FamilySpecError(f"{where}: missing {' and '.join(missing)}{hint}")
    if params <= 0 or tokens <= 0:
        raise FamilySpecError(f"{where}: params and tokens must be positive, got N={params}, D={tokens}")
    compute = raw.get("compute")
    compute = None if _str_or_none(compute) is None else float(compute)
    return Checkpoint(model_id=model_id, path=path, params=params, tokens=tokens, step=step, revision=revision,
                      gguf_file=_str_or_none(raw.get("gguf_file")), dtype=_str_or_none(raw.get("dtype")),
                      compute=compute, seed=_int_or_none(raw.get("seed"), "seed", where),
                      tokenizer=_str_or_none(raw.get("tokenizer")), family=family)


def spec_from_dict(d: dict[str, Any], *, source: str = "<dict>", base: Path | None = None) -> FamilySpec:
    """Build a :class:`FamilySpec` from the YAML structure (``family``, ``checkpoints``, ...)."""
    if not isinstance(d, dict) or "checkpoints" not in d:
        raise FamilySpecError(f"family spec {source!r}: expected a mapping with 'family' and 'checkpoints'")
    family = _str_or_none(d.get("family"))
    if not family:
        raise FamilySpecError(f"family spec {source!r}: no 'family' name")
    tps = _int_or_none(d.get("tokens_per_step"), "tokens_per_step", f"family spec {source!r}")
    raws = d["checkpoints"]
    if not isinstance(raws, list):
        raise FamilySpecError(f"family spec {source!r}: 'checkpoints' must be a list")
    cks = tuple(_checkpoint(r, i, family, tps, base, source) for i, r in enumerate(raws))
    return FamilySpec(family=family, checkpoints=cks, tokens_per_step=tps,
                      params_kind=_str_or_none(d.get("params_kind")), source=source)


def load_spec(path: str | os.PathLike, *, family: str | None = None) -> FamilySpec:
    """Read a family spec from YAML (``.yaml``/``.yml``, or JSON) or CSV.

    Relative checkpoint paths are resolved against the spec file's folder (hub ids such as
    ``EleutherAI/pythia-160m`` stay as they are unless such a folder exists there).

    Parameters
    ----------
    path : path-like
        The spec file.
    family : str, optional
        Family name for a CSV without a ``family`` column.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        The spec file does not exist, or is a folder (names the path).
    FamilySpecError
        Naming the file and the checkpoint, e.g. when N or D is missing; or the file is not UTF-8 text.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"family spec {str(p)!r} is a folder, not a spec file")
    if not p.is_file():
        raise FileNotFoundError(f"family spec {str(p)!r} does not exist")
    base = p.resolve().parent
    try:
        return _load_spec_file(p, base, family)
    except UnicodeDecodeError as e:
        raise FamilySpecError(f"family spec {str(p)!r}: not UTF-8 text (byte {e.start})") from None


def _load_spec_file(p: Path, base: Path, family: str | None) -> FamilySpec:
    """:func:`load_spec` on an existing file (relative checkpoint paths resolved against ``base``)."""
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise FamilySpecError(f"family spec {str(p)!r} has no rows")
        fams = {r.get("family") for r in rows if r.get("family")}
        if len(fams) > 1:
            raise FamilySpecError(f"family spec {str(p)!r}: several families {sorted(fams)}; one spec per family")
        tps = {r.get("tokens_per_step") for r in rows if r.get("tokens_per_step")}
        d = {"family": family or (fams.pop() if fams else None),
             "tokens_per_step": tps.pop() if len(tps) == 1 else None,
             "checkpoints": [{k: v for k, v in r.items() if k not in {"family", "tokens_per_step"} and k}
                             for r in rows]}
        return spec_from_dict(d, source=str(p), base=base)
    with open(p, encoding="utf-8") as fh:
        try:
            d = yaml.safe_load(fh)
        except yaml.YAMLError as e:
            raise FamilySpecError(f"family spec {str(p)!r}: invalid YAML ({e})") from e
    if family and isinstance(d, dict):
        d.setdefault("family", family)
    return spec_from_dict(d, source=str(p), base=base)


def spec_from_checkpoint(path: str | os.PathLike, *, family: str | None = None, params: int | None = None,
                         tokens: int | None = None, step: int | None = None, tokens_per_step: int | None = None,
                         revision: str | None = None, gguf_file: str | None = None) -> FamilySpec:
    """A one-checkpoint spec for ``capscale eval --family CHECKPOINT_PATH``.

    ``params`` is counted from the safetensors headers when not given; ``step`` and ``tokens`` are read from a
    ``stepN[-tokensMB]`` folder name. D must be given (or derivable) or a :class:`FamilySpecError` says so.

    A path ending in a spec file's suffix (:data:`SPEC_SUFFIXES`: ``.yaml``, ``.yml``, ``.csv``, ``.json``) that
    is not a folder is a spec file, not a checkpoint: it is read with :func:`load_spec` (``family`` applies, the
    single-checkpoint arguments do not), and a :class:`FileNotFoundError` says so when it does not exist.
    """
    p = str(path)
    if Path(p).suffix.lower() in SPEC_SUFFIXES and not Path(p).is_dir():
        # a spec file's name, not a checkpoint: read it, or say it is missing (not "missing params and tokens")
        if not Path(p).exists():
            raise FileNotFoundError(f"family spec {p!r} does not exist")
        return load_spec(p, family=family)
    info = _infer(Path(p)) if Path(p).is_dir() else {}
    params = params or info.get("params")
    step = step if step is not None else info.get("step")
    tokens = tokens or info.get("tokens")
    if tokens is None and step is not None and tokens_per_step:
        tokens = step * tokens_per_step
    raw = {"path": str(Path(p).resolve()) if Path(p).exists() else p, "params": params, "tokens": tokens,
           "step": step, "revision": revision, "gguf_file": gguf_file}
    fam = family or info.get("family") or Path(p).name
    try:
        return spec_from_dict({"family": fam, "checkpoints": [raw]}, source=p)
    except FamilySpecError as e:
        raise FamilySpecError(f"{e}. For a single checkpoint pass --params N and --tokens D (or --step and "
                              "--tokens-per-step), or write a family spec") from None


# ---------------------------------------------------------------------------------------------- scanning


def count_params(folder: str | os.PathLike) -> int | None:
    """Number of parameters from the safetensors headers in ``folder`` (no weights are read), else None.

    Tied weights stored once are counted once, as in ``model.num_parameters()``.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k == "__metadata__":
                continue
            total += math.prod(v["shape"]) if v["shape"] else 1
    return total


def _is_checkpoint(d: Path) -> bool:
    return (d / "config.json").is_file() and (any((d / w).is_file() for w in WEIGHT_FILES)
                                              or any(d.glob("*.gguf")))


def _size_from_name(name: str) -> int | None:
    m = _SIZE.search(name)
    if not m:
        return None
    mult = {"k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()]
    return int(round(float(m.group(1)) * mult))


def _infer(d: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    m = _REV.match(d.name)
    if m:
        out["step"] = int(m.group(3))
        if m.group(4):
            out["tokens"] = int(round(float(m.group(4)) * 1e9))
        out["family"] = d.parent.name
    n = count_params(d)
    if n is not None:
        out["params"] = n
        out["params_source"] = "safetensors"
    return out


@dataclass
class ScanResult:
    """What :func:`scan` found.

    Attributes
    ----------
    spec : dict
        YAML-ready spec (``None`` where a field could not be inferred).
    missing : dict
        model_id -> list of fields that could not be inferred (fill them in before ``capscale eval``).
    notes : list of str
        How fields were inferred and which folders were skipped.
    """

    spec: dict[str, Any]
    missing: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.spec, sort_keys=False)


def scan(directory: str | os.PathLike, *, family: str | None = None,
         tokens_per_step: int | None = None, relative: bool = True) -> ScanResult:
    """Build a family spec from local HF-format checkpoint folders.

    Layouts: ``DIR/<model>/<revision>/``, ``DIR/<revision>/`` or ``DIR`` itself. A folder counts when it has
    ``config.json`` and weights (``model.safetensors[.index.json]``, ``pytorch_model.bin[.index.json]`` or a
    ``.gguf``). Revision names follow ``[stageK-][ingredientK-]stepN[-tokensMB]`` (Pythia, OLMo); N is counted
    from safetensors headers (exact) or else read from a size in the model name (``160m``, ``1.4b``;
    approximate, noted); D comes from ``tokensMB`` or ``step x tokens_per_step``.

    Parameters
    ----------
    directory : path-like
    family : str, optional
        Family name (default: the directory name).
    tokens_per_step : int, optional
        Tokens per optimiser step (Pythia: 2,097,152).
    relative : bool, default True
        Write checkpoint paths relative to ``directory`` (so the spec can live there).

    Returns
    -------
    ScanResult
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"family scan: {str(root)!r} is not a directory")
    found = sorted({p.parent for p in root.rglob("config.json") if _is_checkpoint(p.parent)})
    notes = []
    skipped = sorted({p.parent for p in root.rglob("config.json")} - set(found))
    for s in skipped:
        notes.append(f"skipped {s}: config.json without weights")
    cks, missing = [], {}

    def sort_key(d: Path):
        m = _REV.match(d.name)
        return (str(d.parent), int(m.group(3)) if m else -1, d.name)

    for d in sorted(found, key=sort_key):
        info = _infer(d)
        if "params" not in info:
            guess = _size_from_name(d.parent.name if _REV.match(d.name) else d.name)
            if guess:
                info["params"] = guess
                notes.append(f"{d}: params {guess} read from the model name (approximate)")
        if "tokens" not in info and "step" in info and tokens_per_step:
            info["tokens"] = info["step"] * tokens_per_step
        if info.get("tokens") == 0:
            info["tokens"] = None
            notes.append(f"{d}: step 0 gives D = 0, which the store cannot take (D must be positive): set tokens")
        path = str(d.relative_to(root)) if relative and d != root else (str(d) if not relative else ".")
        mid = default_model_id(str(d))
        entry = {"model_id": mid, "path": path, "params": info.get("params"), "tokens": info.get("tokens"),
                 "step": info.get("step")}
        gg = sorted(d.glob("*.gguf"))
        if gg and not any((d / w).is_file() for w in WEIGHT_FILES):
            entry["gguf_file"] = gg[0].name
        miss = [k for k in ("params", "tokens", "step") if entry[k] is None]
        if miss:
            missing[mid] = miss
        cks.append(entry)
    if not cks:
        raise FileNotFoundError(f"family scan: no checkpoint folders (config.json + weights) under {str(root)!r}")
    spec: dict[str, Any] = {"family": family or root.name}
    if tokens_per_step:
        spec["tokens_per_step"] = tokens_per_step
    spec["checkpoints"] = cks
    return ScanResult(spec=spec, missing=missing, notes=notes)
