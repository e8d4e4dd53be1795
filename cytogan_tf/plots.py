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


def embed_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates of profile rows by PCA (default) or t-SNE (cosine metric)."""
    x = np.asarray(x, dtype=np.float64)
    # z-score columns first: hand-made features mix pixel areas with fractions, and the
    # largest-scale column would otherwise be the whole picture
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    if method == "pca":
        from sklearn.decomposition import PCA

        if x.shape[1] < 2 or len(x) < 2:
            return np.column_stack([x[:, 0] if x.shape[1] else np.zeros(len(x)), np.zeros(len(x))])
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(max(2, min(30, (len(x) - 1) / 3)))
        return TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity,
                    random_state=seed).fit_transform(x)
    raise ValueError(f"unknown embedding method {method!r} (pca, tsne)")


def plot_embedding(coords: np.ndarray, labels, path, title: str = "") -> None:
    plt = _pyplot()
    labels = np.asarray([str(v) for v in labels])
    names = sorted(set(labels))
    cmap = plt.get_cmap("tab20", max(len(names), 1))
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for k, name in enumerate(names):
        sel = labels == name
        ax.scatter(coords[sel, 0], coords[sel, 1], s=28, color=cmap(k), label=name,
                   edgecolors="black" if name == "DMSO" else "none", linewidths=0.5)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
