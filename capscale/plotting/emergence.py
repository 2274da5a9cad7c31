"""Figures of the emergence report (emergence.md §9.6): P1–P7 and P10 (P8 forest and P9 loss view are not drawn).

:func:`plot_report` takes a report made with ``analyse(..., keep_curves=True)`` and writes PNGs named
``<stem>_<figure>.png``. Figures that need per-item data are skipped for aggregate-only input.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from capscale._io import safe_name
from capscale.analysis.emergence import fits as _fits
from capscale.analysis.emergence import stats as _st
from capscale.analysis.emergence.analysis import to_shape
from capscale.plotting import style

__all__ = ["plot_report"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style.apply()
    return plt


def _save(fig, path: Path) -> Path:
    from capscale.plotting.chain import save_figure

    save_figure(fig, path, close=False, bbox_inches="tight")
    return path


def _fmt(v, spec: str = ".2f") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return format(v, spec)


def plot_ladder(rep: dict, path: Path) -> Path:
    """P1: every metric vs log10 C with bootstrap bands, chance line, model rug and (τ, B/(n−1), J_ex)."""
    plt = _plt()
    x = np.asarray(rep["x"])
    names = list(rep["metrics"])
    ncol = min(3, len(names))
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    for ax, m in zip(axes.ravel(), names):
        d = rep["metrics"][m]
        y = np.asarray(d["y"])
        ax.plot(x, y, "o-", color="C0")
        if d.get("ci"):
            ax.fill_between(x, d["ci"][0], d["ci"][1], color="C0", alpha=0.25, lw=0)
        if d.get("chance") is not None:
            ax.axhline(d["chance"], color="grey", ls="--", lw=1)
        for xi in x:
            ax.axvline(xi, ymin=0, ymax=0.03, color="k", lw=1)
        tag = " [D]" if m == rep.get("decision_metric") else (" [K]" if m == rep.get("continuous_metric") else "")
        ax.set_title(f"{m}{tag}\nτ={_fmt(d.get('tau_model'))} B/(n-1)={_fmt(d.get('B_norm'))} "
                     f"J_ex={_fmt(d.get('J_ex'))}", fontsize=9)
        style.compute_axis(ax)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(f"{rep['family']} / {rep['task']}: {rep['verdict']}", fontsize=11)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_latent(rep: dict, per_item: dict, path: Path) -> Path | None:
    """P2: violins of the per-item latent (margin, else choice log-odds) per model, line at 0."""
    lat = "margin" if "margin" in per_item else ("choice_logodds" if "choice_logodds" in per_item else None)
    if lat is None:
        return None
    plt = _plt()
    M = per_item[lat]
    lo, hi = np.percentile(M, [0.5, 99.5])
    data = [np.clip(r, lo, hi) for r in M]
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(data) + 2), 3.6))
    ax.violinplot(data, positions=np.arange(len(data)), showmedians=True)
    ax.axhline(0, color="C3", lw=1)
    ax.set_xticks(np.arange(len(data)))
    ax.set_xticklabels([f"{v:.1f}" for v in rep["x"]], rotation=45)
    style.compute_axis(ax)
    ax.set_ylabel(f"per-item {lat} (nats)")
    ax.set_title(f"P2 latent distribution (area above 0 = accuracy): {rep['task']}", fontsize=10)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_trajectories(rep: dict, per_item: dict, path: Path, n: int = 50) -> Path | None:
    """P3: ~50 random items' logp_vocab, p_choices and acc vs log10 C."""
    ms = [m for m in ("logp_vocab", "p_choices", "acc") if m in per_item]
    if not ms:
        return None
    plt = _plt()
    x = np.asarray(rep["x"])
    n_items = per_item[ms[0]].shape[1]
    pick = np.random.default_rng(0).choice(n_items, size=min(n, n_items), replace=False)
    fig, axes = plt.subplots(1, len(ms), figsize=(4.2 * len(ms), 3.4), squeeze=False)
    for ax, m in zip(axes[0], ms):
        Y = per_item[m][:, pick]
        jitter = 0.02 * np.random.default_rng(1).standard_normal(Y.shape) if m == "acc" else 0.0
        ax.plot(x, Y + jitter, "-", lw=0.7, alpha=0.5)
        ax.set_title(f"P3 {m} ({len(pick)} random items)", fontsize=9)
        style.compute_axis(ax)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_resolution(rep: dict, path: Path) -> Path | None:
    """P10: per-model accuracy with Wilson CIs, chance, and the detection scale per metric."""
    res = rep.get("resolution")
    if not res:
        return None
    plt = _plt()
    x = np.asarray(rep["x"])
    acc = np.asarray(rep["metrics"]["acc"]["y"])
    lo, hi = (np.asarray(v) for v in res["wilson_ci"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(x, acc, yerr=[np.maximum(acc - lo, 0), np.maximum(hi - acc, 0)], fmt="o", color="C0", capsize=3, label="acc (Wilson 95 %)")
    if res.get("chance") is not None:
        ax.axhline(res["chance"], color="grey", ls="--", lw=1, label="chance")
    for j, (m, d) in enumerate(rep["metrics"].items()):
        if d.get("detect_x") is not None:
            ax.axvline(d["detect_x"], color=f"C{j + 1}", lw=1, alpha=0.7, label=f"detect {m}")
    style.compute_axis(ax)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    ax.set_title(f"P10 resolution: 1/n_items = {res['resolution_1_over_n']:.4f}, min detectable lift "
                 f"{_fmt(res.get('min_detectable_lift'), '.3f')}", fontsize=9)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_item_tau(rep: dict, per_item: dict, path: Path) -> Path | None:
    """P4: complementary ECDF of the per-item Kendall τ_i per metric."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for m in ("logp_vocab", "choice_logodds", "p_choices", "neg_brier", "acc"):
        if m not in per_item:
            continue
        t = np.asarray(_st.kendall_tau_rows(per_item[m].T))
        t = np.sort(t[np.isfinite(t)])
        if not len(t):
            continue
        ax.step(t, 1 - np.arange(len(t)) / len(t), where="post", label=m)
    ax.set_xlabel("per-item Kendall τ with compute")
    ax.set_ylabel("fraction of items ≥ τ")
    ax.legend(fontsize=8)
    ax.set_title(f"P4 per-item τ: {rep['task']}", fontsize=10)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_crossing(rep: dict, path: Path) -> Path | None:
    """P5: histogram of crossing points x*_i with observed and implied accuracy; per-item PU tail."""
    cp = rep.get("crossing_points")
    if not cp or not cp.get("xstar_sample"):
        return None
    plt = _plt()
    x = np.asarray(rep["x"])
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    xs = np.asarray(cp["xstar_sample"])
    lo, hi = x[0] - 0.5 * (x[-1] - x[0]), x[-1] + 0.5 * (x[-1] - x[0])
    ax.hist(np.clip(xs, lo, hi), bins=40, color="C7", alpha=0.6, density=True, label="crossing points x*")
    style.compute_axis(ax)
    ax.set_ylabel("density of x*")
    ax2 = ax.twinx()
    if cp.get("observed_acc") is not None:
        ax2.plot(x, cp["observed_acc"], "o-", color="C0", label="observed acc")
        if cp.get("band"):
            ax2.fill_between(x, cp["band"][0], cp["band"][1], color="C0", alpha=0.2, lw=0)
    ax2.plot(x, cp["implied_acc"], "s--", color="C3", label="implied by crossing points")
    ax2.set_ylabel("accuracy")
    ax2.legend(fontsize=8, loc="upper left")
    ax.set_title(f"P5 crossing points ({cp['latent']}, {cp['fit']}): IQR {_fmt(cp.get('iqr_dec'))} dec",
                 fontsize=10)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_fits(rep: dict, reps: dict, path: Path) -> Path | None:
    """P6: fits of D and K in their shape spaces on the first n − 1 models, held-out point with z."""
    plt = _plt()
    x = np.asarray(rep["x"])
    n = len(x)
    ms = [m for m in (rep.get("decision_metric"), rep.get("continuous_metric")) if m]
    if n < 5 or not ms:
        return None
    fig, axes = plt.subplots(1, len(ms), figsize=(5 * len(ms), 3.6), squeeze=False)
    xx = np.linspace(x[0], x[-1], 200)
    for ax, m in zip(axes[0], ms):
        d = rep["metrics"][m]
        S, space = to_shape(m, np.asarray(d["y"])[None, :], d.get("chance"))
        s = S[0]
        tr = s[: n - 1]
        xt = x[: n - 1]
        ax.plot(x[: n - 1], tr, "o", color="k", label="fitted models")
        ax.plot(x[-1], s[-1], "*", ms=12, color="C3", label=f"held out (z={_fmt((d.get('extrapolation') or {}).get('z', [None])[0])})")
        F = _fits.fit_all(xt, tr[None, :], bounded=m in ("acc", "acc_norm", "acc_bytes", "exact_match_greedy",
                                                       "p_choices", "neg_brier") and d.get("chance") is not None)
        if "linear" in F:
            ax.plot(xx, F["linear"]["a"][0] + F["linear"]["b"][0] * xx, label="linear")
        if "quadratic" in F:
            q = _fits.fit_linear_family(xt, tr[None, :], 2)
            ax.plot(xx, _fits.predict_poly(q["coef"], q["x_mean"], xx)[0], label="quadratic")
        if "sigmoid2" in F:
            f = F["sigmoid2"]
            ax.plot(xx, 0.5 * (1 + np.tanh(0.5 * f["k"][0] * (xx - f["x0"][0]))), label="sigmoid-2")
        if "hinge2" in F:
            f = F["hinge2"]
            ax.plot(xx, f["s"][0] * np.maximum(0, xx - f["x_b"][0]), label="hinge-2")
        if "broken" in F:
            f = F["broken"]
            ax.plot(xx, f["a"][0] + f["b"][0] * xx + f["d"][0] * np.maximum(0, xx - f["x_b"][0]), label="broken")
        ax.set_title(f"P6 {m}: {space}", fontsize=9)
        style.compute_axis(ax)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_passuntil(rep: dict, path: Path) -> Path | None:
    """P7: u = ln(−ln PU) vs log10 C with linear and quadratic fits and residuals."""
    pu = rep.get("passuntil")
    if not pu or "beta2" not in pu:
        return None
    plt = _plt()
    x = np.asarray(rep["x"])
    u = np.asarray(pu["u"])
    xx = np.linspace(x[0], x[-1], 200)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(5, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    a1.plot(x, u, "o", color="k")
    ql, qq = pu["lin_fit"], pu["quad_fit"]
    lin = _fits.predict_poly(np.asarray([ql["coef_centred"]]), ql["x_mean"], xx)[0]
    quad = _fits.predict_poly(np.asarray([qq["coef_centred"]]), qq["x_mean"], xx)[0]
    a1.plot(xx, lin, label="linear")
    a1.plot(xx, quad, label=f"quadratic β₂={pu['beta2']:.3g}")
    a1.set_ylabel("u = ln(−ln PU)")
    a1.legend(fontsize=8)
    a1.set_title(f"P7 PassUntil space: {rep['task']}", fontsize=10)
    a2.axhline(0, color="grey", lw=1)
    a2.plot(x, u - _fits.predict_poly(np.asarray([ql["coef_centred"]]), ql["x_mean"], x)[0], "o-",
            label="residual (linear)")
    style.compute_axis(a2)
    a2.legend(fontsize=8)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_report(rep: dict, out_dir: str | os.PathLike, stem: str | None = None) -> list[Path]:
    """Write every applicable figure for one report; returns the paths written.

    ``rep`` must come from ``analyse(..., keep_curves=True)`` for P2/P4 (per-item data).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or safe_name(rep["task"])
    paths: list[Path | None] = []
    if rep.get("metrics"):
        paths.append(plot_ladder(rep, out_dir / f"{stem}_P1_ladder.png"))
        per_item = rep.get("_per_item")
        if per_item:
            paths.append(plot_latent(rep, per_item, out_dir / f"{stem}_P2_latent.png"))
            paths.append(plot_trajectories(rep, per_item, out_dir / f"{stem}_P3_trajectories.png"))
            paths.append(plot_item_tau(rep, per_item, out_dir / f"{stem}_P4_item_tau.png"))
        paths.append(plot_crossing(rep, out_dir / f"{stem}_P5_crossing.png"))
        paths.append(plot_fits(rep, rep.get("_replicates") or {}, out_dir / f"{stem}_P6_fits.png"))
        paths.append(plot_passuntil(rep, out_dir / f"{stem}_P7_passuntil.png"))
        paths.append(plot_resolution(rep, out_dir / f"{stem}_P10_resolution.png"))
    return [p for p in paths if p is not None]
