"""The predictor contract shared by every method of :mod:`capscale.analysis.predict`.

A predictor follows scikit-learn's estimator rules, with a ladder-shaped ``fit``:

* every option is an explicit keyword argument of ``__init__``, stored unchanged under the same name
  (no ``**kwargs``: an unknown option is a ``TypeError`` naming it); options are validated in ``fit``;
* :meth:`Predictor.get_params` / :meth:`Predictor.set_params` read and change the options (so
  ``sklearn.base.clone`` works);
* ``fit(ladder, task, *, metric, store)`` sets the fitted attributes, whose names end in ``_``, and returns
  ``self``;
* ``predict(params, tokens) -> Prediction`` and ``report() -> dict`` raise
  :class:`~capscale.errors.NotFittedError` before ``fit`` (:func:`check_is_fitted`).
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd

from capscale.errors import CapscaleError, NotFittedError, UsageError

__all__ = ["Prediction", "Predictor", "MethodNotApplicable", "check_is_fitted", "law_dict"]


@dataclass
class Prediction:
    """A predicted value of a task metric with its nominal 90 % interval.

    Attributes
    ----------
    value : float
        The point prediction, in the metric's units (accuracy: a fraction in [0, 1]).
    lower, upper : float
        Bounds of the interval (nominal probability ``level``, 90 % by default), same units.
    warnings : list of str
        What the caller should know (extrapolation distance, bounds hit, clipping, failed refits).
    """

    value: float
    lower: float
    upper: float
    warnings: list[str] = field(default_factory=list)


class MethodNotApplicable(CapscaleError, ValueError):
    """The method cannot run on this input (it needs a score store, or a task loss the ladder lacks)."""


def check_is_fitted(predictor: Predictor, attributes: str | tuple[str, ...] | None = None,
                    action: str = "predict") -> None:
    """Raise :class:`~capscale.errors.NotFittedError` unless ``predictor`` has been fitted.

    Parameters
    ----------
    predictor : Predictor
        The predictor to check.
    attributes : str or tuple of str, optional
        Fitted attributes that must all be set; by default any instance attribute whose name ends in
        ``_`` counts (scikit-learn's rule).
    action : str
        What was attempted (``"predict"``, ``"report"``), named in the message.
    """
    if attributes is None:
        fitted = any(k.endswith("_") and not k.startswith("__") for k in vars(predictor))
    else:
        names = (attributes,) if isinstance(attributes, str) else attributes
        fitted = all(hasattr(predictor, a) for a in names)
    if not fitted:
        raise NotFittedError(f"predictor {getattr(predictor, 'name', type(predictor).__name__)!r} "
                             f"({type(predictor).__name__}) is not fitted: call fit(ladder, task, ...) before "
                             f"{action}()")


def law_dict(law: Any) -> dict[str, Any]:
    """``law.to_dict()`` with the unbounded side of every parameter bound as ``None`` (JSON ``null``).

    Parameters
    ----------
    law : capscale.analysis.laws.Law
        A fitted law.

    Returns
    -------
    dict
        The law's description as capscale's fit and prediction files record it.
    """
    d = law.to_dict()
    d["bounds"] = {k: [v if math.isfinite(v) else None for v in b] for k, b in d["bounds"].items()}
    return d


class Predictor(ABC):
    """Base class of the prediction methods (see the module docstring for the contract).

    Subclasses set :attr:`name`, declare their options as keyword arguments of ``__init__`` and implement
    :meth:`fit`, :meth:`predict` and :meth:`report` (abstract here).
    """

    #: The method's name in :data:`capscale.analysis.predict.METHODS`.
    name: ClassVar[str] = "predictor"
    #: Whether ``fit`` needs the per-choice score store (``store=``), not just the ladder table.
    needs_store: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls._get_param_names()  # a subclass with *args/**kwargs in __init__ is an error at definition

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The option names: the keyword arguments of ``__init__``, sorted."""
        init = cls.__init__
        if init is object.__init__:
            return []
        params = list(inspect.signature(init).parameters.values())[1:]
        bad = [p.name for p in params if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if bad:
            raise TypeError(f"{cls.__name__}.__init__ takes *{bad[0]}: a predictor's options must be explicit "
                            "keyword arguments (scikit-learn's estimator rule)")
        return sorted(p.name for p in params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The predictor's options.

        Parameters
        ----------
        deep : bool
            Also return the options of options that are estimators themselves, as ``<option>__<name>``.

        Returns
        -------
        dict
            Option name to value, as given to ``__init__`` or :meth:`set_params`.
        """
        out: dict[str, Any] = {}
        for key in self._get_param_names():
            value = getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update({f"{key}__{k}": v for k, v in value.get_params().items()})
            out[key] = value
        return out

    def set_params(self, **params: Any) -> Predictor:
        """Change options (``<option>__<name>`` reaches an option that is an estimator); returns ``self``.

        Raises
        ------
        capscale.errors.UsageError
            An option this predictor does not have (the message lists the valid ones).
        """
        valid = self._get_param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            head, _, sub = key.partition("__")
            if head not in valid:
                raise UsageError(f"invalid option {head!r} for predictor {self.name!r} ({type(self).__name__}); "
                                 f"valid options: {valid}")
            if sub:
                nested.setdefault(head, {})[sub] = value
            else:
                setattr(self, head, value)
        for head, sub_params in nested.items():
            getattr(self, head).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.get_params(deep=False).items())
        return f"{type(self).__name__}({opts})"

    @abstractmethod
    def fit(self, ladder: pd.DataFrame, task: str, *, metric: str = "acc",
            store: pd.DataFrame | None = None) -> Predictor:
        """Fit on the ladder (and per-choice ``store`` where the method needs it); returns ``self``.

        Parameters
        ----------
        ladder : pandas.DataFrame
            A ladder table (:mod:`capscale.data.ladder_table`): one row per (checkpoint, task, metric).
        task : str
            The task to predict.
        metric : str
            The metric to predict (``acc``, ``acc_norm``, ...; accuracies are fractions in [0, 1]).
        store : pandas.DataFrame, optional
            The per-choice score store of the same models.
        """

    @abstractmethod
    def predict(self, params: float, tokens: float) -> Prediction:
        """The metric predicted for a model of ``params`` parameters trained on ``tokens`` tokens
        (compute 6·N·D FLOPs), with its interval; raises :class:`~capscale.errors.NotFittedError` before fit."""

    @abstractmethod
    def report(self) -> dict[str, Any]:
        """The fit as a JSON-ready dict (method, task, metric, fitted laws, settings, warnings); raises
        :class:`~capscale.errors.NotFittedError` before fit."""
