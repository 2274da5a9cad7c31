"""Lazy attributes for package ``__init__`` modules (PEP 562), so that importing a stage loads nothing heavy."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["lazy_submodules"]


def lazy_submodules(package: str, names: Iterable[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a package whose public names are its submodules ``names``.

    ``capscale.data.store`` then works after ``import capscale.data`` without importing every submodule up
    front; an unknown name raises ``AttributeError`` as usual.
    """
    known = tuple(names)

    def __getattr__(name: str) -> Any:
        if name in known:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(known)

    return __getattr__, __dir__
