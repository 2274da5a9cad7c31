"""The contract every stage runner follows: one ``Options`` dataclass and one ``run`` function.

Each module of :mod:`capscale.pipelines` (``analyze``, ``mass``, ``backtest``, ``fit``, ``emergence``,
``report``, ``demo``) exposes

* ``Options``: a frozen dataclass of the stage's settings (the flags of its ``capscale`` command), with
  ``Options.from_cli(args)`` building it from an ``argparse.Namespace`` (lm-eval's ``EvaluatorConfig.from_cli``
  is the model): the CLI parses, calls ``from_cli``, calls ``run`` and prints;
* ``run(inputs, options) -> RunResult``: reads nothing but ``inputs`` (a DataFrame, or a path where the stage
  reads files), writes its results folder ``options.out`` when one is set, and returns a :class:`RunResult`.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

__all__ = ["RunResult", "StageOptions"]

T = TypeVar("T", bound="StageOptions")


@dataclass
class RunResult:
    """What a stage runner returns.

    Attributes
    ----------
    stage : str
        The stage's name (``"analyze"``, ``"mass"``, ...).
    out : Path or None
        The results folder written (None when the run wrote nothing).
    files : list of Path
        Every file written, in the order written.
    summary : dict
        JSON-ready summary of the run (counts, verdicts, headline numbers); what the CLI prints.
    tables : dict of str to pandas.DataFrame
        The run's main tables by name, in memory (the same content as the CSV/Parquet files written).
    notes : list of str
        What was skipped or excluded and why (also recorded in the summary file of the stage).
    """

    stage: str
    out: Path | None = None
    files: list[Path] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        """``result["summary"]`` etc., for code written against the dicts the runners used to return."""
        if key in {"stage", "out", "files", "summary", "tables", "notes"}:
            return getattr(self, key)
        return self.summary[key]


@dataclass(frozen=True)
class StageOptions:
    """Base of every stage's ``Options``: ``from_cli`` maps ``argparse`` attributes onto the fields.

    A field is taken from the namespace attribute of the same name when present; subclasses override
    ``from_cli`` where a flag needs converting (e.g. a comma-separated list into a tuple).
    """

    @classmethod
    def from_cli(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
        """Build the options from parsed command-line arguments (``overrides`` win)."""
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                kw[f.name] = overrides[f.name]
            elif hasattr(args, f.name):
                kw[f.name] = getattr(args, f.name)
        return cls(**kw)
