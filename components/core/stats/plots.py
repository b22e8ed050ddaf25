"""Report figures (matplotlib, headless): confusion matrices, ROC/PR curves, reliability diagram,
training curves, and image galleries (top losses; Grad-CAM overlays per class, correct next to wrong,
with the lung field of the shortcut tests outlined)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from components.core.contract.fsutil import atomic_path


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_matrix(cm: np.ndarray, classes: list[str], path: Path, normalise: bool = False) -> Path:
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalise else cm
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else max(1, shown.max()))
    for i in range(len(classes)):
        for j in range(len(classes)):
            text = f"{shown[i, j]:.2f}" if normalise else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center",
                    color="white" if shown[i, j] > (0.5 if normalise else shown.max() / 2) else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix" + (" (row-normalised = recall)" if normalise else ""))
    return _save(fig, path)


def curves(y: np.ndarray, proba: np.ndarray, classes: list[str], roc_path: Path, pr_path: Path) -> list[dict]:
    """One-vs-rest ROC and precision-recall curves; returns ROC points for the DVC plot CSV."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    points = []
    fig_roc, ax_roc = plt.subplots(figsize=(5, 5))
    fig_pr, ax_pr = plt.subplots(figsize=(5, 5))
    for i, c in enumerate(classes):
        pos = y == i
        if not 0 < pos.sum() < len(y):
            continue
        fpr, tpr, _ = roc_curve(pos, proba[:, i])
        ax_roc.plot(fpr, tpr, label=f"{c} (AUC {auc(fpr, tpr):.3f})")
        points += [{"class": c, "fpr": round(float(a), 5), "tpr": round(float(b), 5)}
                   for a, b in zip(fpr, tpr, strict=True)]
        prec, rec, _ = precision_recall_curve(pos, proba[:, i])
        ax_pr.plot(rec, prec, label=c)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
    ax_roc.set(xlabel="false positive rate (1 - specificity)", ylabel="true positive rate (sensitivity)",
               title="ROC, one vs rest")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall, one vs rest")
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "lower left", fontsize=8)
    _save(fig_roc, roc_path)
    _save(fig_pr, pr_path)
    return points


def reliability(bins: list[dict], ece: float | None, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    centres = [(b["bin_low"] + b["bin_high"]) / 2 for b in bins]
    acc = [b["accuracy"] if b["accuracy"] is not None else 0 for b in bins]
    ax.bar(centres, acc, width=1 / len(bins), edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "r--", label="perfect calibration")
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title=f"reliability diagram (ECE {ece:.3f})" if ece is not None else "reliability diagram")
    ax.legend(loc="upper left")
    return _save(fig, path)


def training_curves(history: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for k in (key, f"val_{key}"):
            if history and k in history[0]:
                ax.plot(epochs, [h[k] for h in history], marker=".", label=k)
        phases = [h["phase"] for h in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(epochs[i] - 0.5, color="grey", ls=":", lw=1)
        ax.set(xlabel="epoch", title=key)
        ax.legend()
    return _save(fig, path)


def gallery(images: list[np.ndarray], captions: list[str], path: Path, title: str, cols: int = 4) -> Path:
    """A grid of grayscale (H×W) or RGB (H×W×3) images with captions."""
    n = max(1, len(images))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, cap in zip(axes.ravel(), images, captions, strict=False):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(cap, fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def gradcam_grid(rows: list[list[dict | None]], row_labels: list[str], col_labels: list[str], path: Path,
                 title: str) -> Path:
    """A grid of Grad-CAM overlays: one row per class, columns as labelled (e.g. correct…, wrong…).

    Each cell is ``None`` (shown as "none") or ``{"image": H×W×3 uint8, "caption": str, "rect": (r0, r1,
    c0, c1) or None}``; ``rect`` is drawn as a dashed white outline (the lung field).
    """
    from matplotlib.patches import Rectangle

    n_rows, n_cols = max(1, len(rows)), max(1, len(col_labels))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.8 * n_rows), squeeze=False)
    for r, cells in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = cells[c] if c < len(cells) else None
            if cell is None:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="grey", transform=ax.transAxes)
                for spine in ax.spines.values():
                    spine.set_visible(False)
            else:
                ax.imshow(cell["image"], vmin=0, vmax=255)
                if cell.get("rect"):
                    r0, r1, c0, c1 = cell["rect"]
                    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, ec="white",
                                           ls="--", lw=1.2))
                ax.set_xlabel(cell.get("caption", ""), fontsize=7)
            if r == 0:
                ax.set_title(col_labels[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def compare_sets(results: dict[str, dict], path: Path) -> Path:
    """Accuracy, macro F1 and macro ROC-AUC per evaluation set, with patient-level CI bars when present."""
    keys = ("accuracy", "macro_f1", "macro_roc_auc")
    names = list(results)
    fig, ax = plt.subplots(figsize=(2 + 2.2 * len(names), 4))
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        xs = np.arange(len(names)) + (j - 1) * width
        vals = [results[n].get(key) or 0.0 for n in names]
        cis = [(results[n].get("ci") or {}).get(key) for n in names]
        err = np.array([[v - c["low"], c["high"] - v] if c else [0, 0] for v, c in zip(vals, cis, strict=True)]).T
        ax.bar(xs, vals, width, yerr=err, capsize=3, label=key)
    ax.set_xticks(np.arange(len(names)), [f"{n}\n(n={results[n].get('n')})" for n in names])
    ax.set(ylim=(0, 1.05), title="internal test split vs external sets (95% CI by patient)")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
