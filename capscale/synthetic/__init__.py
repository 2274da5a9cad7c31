"""The embedded default: a synthetic micro-world, a ladder of small models trained on it, and the demo family.

* :mod:`~capscale.synthetic.world` -- a deterministic biography corpus and multiple-choice tasks about it;
* :mod:`~capscale.synthetic.ladder` -- train a ladder of small Llama-style models on it (CPU), export a family;
* ``family/`` (package data) -- the committed demo family that ``capscale demo`` evaluates.

Submodules are imported on first use.
"""

from capscale._lazy import lazy_submodules

__all__ = ["world", "ladder"]
__getattr__, __dir__ = lazy_submodules(__name__, __all__)
