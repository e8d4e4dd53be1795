"""Figures for `cytogan evaluate`: MOA confusion matrix and a 2-D map of profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .io_utils import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: pd.DataFrame, path, title: str = "") -> None:
    """Row-normalised confusion matrix with the raw counts written in the cells."""
    plt = _pyplot()
    counts = confusion.to_numpy(dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    frac = counts / np.where(totals > 0, totals, 1)
    n = len(confusion)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n + 2, 1.0 + 0.55 * n + 1.5))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), [str(c) for c in confusion.columns], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), [str(c) for c in confusion.index], fontsize=8)
    ax.set_xlabel("predicted MOA")
    ax.set_ylabel("true MOA")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true MOA")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def embed_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """2-D coordinates of profile rows by PCA (default) or t-SNE (cosine metric), and the
    two axis names (with the variance each PCA axis explains)."""
    x = np.asarray(x, dtype=np.float64)
    # z-score columns first: hand-made features mix pixel areas with fractions, and the
    # largest-scale column would otherwise be the whole picture
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    if method == "pca":
        from sklearn.decomposition import PCA

        if x.shape[1] < 2 or len(x) < 2:
            coords = np.column_stack([x[:, 0] if x.shape[1] else np.zeros(len(x)), np.zeros(len(x))])
            return coords, ["PC1", "PC2"]
        pca = PCA(n_components=2, random_state=seed).fit(x)
        names = [f"PC{i + 1} ({100 * r:.1f}% of variance)" for i, r in enumerate(pca.explained_variance_ratio_)]
        return pca.transform(x), names
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(max(2, min(30, (len(x) - 1) / 3)))
        coords = TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
                      random_state=seed).fit_transform(x)
        return coords, ["t-SNE 1", "t-SNE 2"]
    raise ValueError(f"unknown embedding method {method!r} (pca, tsne)")


def robust_limits(values: np.ndarray, quantile: float = 0.02, pad: float = 0.12) -> tuple[float, float]:
    """Axis limits that hold the central 96% of points with a margin, so a few outliers
    do not squash every other treatment into a corner."""
    lo, hi = np.quantile(values, [quantile, 1 - quantile]) if len(values) else (0.0, 1.0)
    span = (hi - lo) or 1.0
    return float(lo - pad * span), float(hi + pad * span)


def _distinct_colours(plt, n: int) -> list:
    # tab20 holds pairs of one hue (dark, light); taking every dark one first keeps
    # neighbouring legend entries apart.
    cmap = plt.get_cmap("tab20")
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [cmap(order[k % 20]) for k in range(n)]


def plot_embedding(coords: np.ndarray, labels, path, title: str = "", axis_names=("", ""),
                   notes: dict | None = None) -> None:
    """Scatter of treatment profiles coloured by MOA. DMSO is ringed in black; a positive
    control (MOA "control") is a black cross, named with its compounds by `notes`
    ({label: legend text}). Points beyond the robust limits sit on the edge as hollow
    triangles, counted in the legend."""
    plt = _pyplot()
    coords = np.asarray(coords, dtype=float)
    labels = np.asarray([str(v) for v in labels])
    notes = notes or {}
    names = sorted(set(labels), key=lambda n: (n in ("DMSO", "control"), n))
    colours = dict(zip([n for n in names if n != "control"], _distinct_colours(plt, len(names))))
    (x0, x1), (y0, y1) = robust_limits(coords[:, 0]), robust_limits(coords[:, 1])
    clipped = np.column_stack([np.clip(coords[:, 0], x0, x1), np.clip(coords[:, 1], y0, y1)])
    outside = (clipped != coords).any(axis=1)
    fig, ax = plt.subplots(figsize=(8.0, 5.5))
    for name in names:
        sel = (labels == name) & ~outside
        text = notes.get(name, name)
        if name == "control":
            ax.scatter(clipped[sel, 0], clipped[sel, 1], s=40, marker="X", color="black", label=text)
        else:
            ax.scatter(clipped[sel, 0], clipped[sel, 1], s=28, color=colours[name], label=text,
                       edgecolors="black" if name == "DMSO" else "none", linewidths=0.8)
        far = (labels == name) & outside
        if far.any():
            ax.scatter(clipped[far, 0], clipped[far, 1], s=40, marker="^", facecolors="none",
                       edgecolors="black" if name == "control" else colours[name], linewidths=1.0,
                       clip_on=False)
    if outside.any():
        ax.scatter([], [], s=40, marker="^", facecolors="none", edgecolors="gray",
                   label=f"{int(outside.sum())} beyond the view, shown at its edge")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel(axis_names[0], fontsize=9)
    ax.set_ylabel(axis_names[1], fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
              title="MOA", title_fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
