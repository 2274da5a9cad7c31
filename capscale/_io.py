"""File output primitives used by every stage: atomic writes, one JSON encoding, safe file names.

Atomic writes go to a temporary file in the destination's folder, then ``os.replace``: a reader (or a resumed
run) sees either the old file or the complete new one, never a partial write. Temporary files are named
``_tmp.*`` (store readers skip them) and removed when the write fails.

JSON written by capscale is strict (no ``NaN``/``Infinity`` literals): :func:`to_jsonable` turns numpy scalars
and arrays into Python values, NaN into ``null`` and ±inf into the strings ``"inf"``/``"-inf"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_dir", "atomic_write_bytes", "atomic_write_text", "to_jsonable", "dumps_json", "write_json",
           "safe_name"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it to ``path``.

    Parameters
    ----------
    path : path-like
        Destination; its folder is created if missing.
    write : callable
        Writes the whole content to the temporary path it is given (e.g. ``lambda p: df.to_parquet(p)``).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="_tmp.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the mode any other tool would
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_dir(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_dir)`` on a temporary folder next to ``path``, then put it in place of ``path``.

    A folder already at ``path`` is replaced (removed just before the rename); on failure the temporary folder
    is removed and ``path`` is left as it was. Temporary folders are named ``_tmp.*``.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="_tmp.", dir=path.parent)
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


def to_jsonable(obj: Any, *, drop_private: bool = False) -> Any:
    """A JSON-ready copy of ``obj`` (the one conversion every capscale JSON file goes through).

    Parameters
    ----------
    obj : Any
        Dicts, lists, tuples, numpy arrays and scalars, dataclass instances, paths, pandas timestamps and
        plain Python values, nested in any way.
    drop_private : bool
        Leave out dict keys that start with ``_`` (internal fields of a result).

    Returns
    -------
    Any
        Only dict/list/str/int/float/bool/None: numpy values become Python values, NaN becomes ``None``,
        ±inf the strings ``"inf"``/``"-inf"``, dict keys strings, paths and timestamps strings. Any other
        object becomes ``str(obj)``.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, drop_private=drop_private) for k, v in obj.items()
                if not (drop_private and str(k).startswith("_"))}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v, drop_private=drop_private) for v in obj]
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf") if math.isinf(obj) else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), drop_private=drop_private)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None:
        if isinstance(obj, np.ndarray):
            return to_jsonable(obj.tolist(), drop_private=drop_private)
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return to_jsonable(float(obj))
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):  # other array scalars (e.g. torch, pandas NA-free scalars)
        try:
            return to_jsonable(obj.item(), drop_private=drop_private)
        except (TypeError, ValueError):
            pass
    return str(obj)


def dumps_json(obj: Any, *, indent: int | None = 1, drop_private: bool = False) -> str:
    """Strict JSON text of ``obj`` after :func:`to_jsonable` (no trailing newline)."""
    return json.dumps(to_jsonable(obj, drop_private=drop_private), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, drop_private: bool = False) -> Path:
    """Atomically write ``obj`` as strict JSON (:func:`dumps_json`) with a final newline; returns the path."""
    return atomic_write_text(path, dumps_json(obj, indent=indent, drop_private=drop_private) + "\n")


def safe_name(name: object) -> str:
    """A file-system-safe file stem for a family or task name (characters other than ``[A-Za-z0-9-_.@]`` -> ``_``).

    Used for figure and report file names; it is not injective, so never use it where two names must not
    collide on disk.
    """
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in str(name))
