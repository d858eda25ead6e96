"""The report's figures, drawn with matplotlib, scikit-learn's displays and lifelines.

Each function returns an open figure (`nic_ray.report.page.figure_image` renders and closes it).
"""

from __future__ import annotations

import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.plotting import add_at_risk_counts
from lifelines.statistics import multivariate_logrank_test
from matplotlib.ticker import MaxNLocator
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, roc_curve

from nic_ray.report.page import plt

_FPR = np.linspace(0, 1, 101)


def roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, resamples: int = 200, seed: int = 0):
    """ROC curves (name → (0/1 truth, score)) with 95% bootstrap bands of the true-positive rate."""
    fig, ax = plt.subplots(figsize=(5, 4.6))
    rng = np.random.default_rng(seed)
    for name, (truth, score) in curves.items():
        fpr, tpr, _ = roc_curve(truth, score)
        (line,) = ax.plot(fpr, tpr, label=name)
        drawn = []
        for _ in range(resamples):
            pick = rng.integers(len(truth), size=len(truth))
            if len(np.unique(truth[pick])) == 2:
                f, t, _ = roc_curve(truth[pick], score[pick])
                drawn.append(np.interp(_FPR, f, t))
        if drawn:
            low, high = np.percentile(drawn, [2.5, 97.5], axis=0)
            ax.fill_between(_FPR, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize="small")
    return fig


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: list[str], title: str):
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ConfusionMatrixDisplay.from_predictions(
        truth, predicted, labels=range(len(classes)), display_labels=classes, ax=ax, colorbar=False, cmap="Blues"
    )
    ax.set_title(title)
    return fig


def calibration(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str):
    """Reliability diagram: the share of positives against the predicted probability, in quantile bins."""
    fig, ax = plt.subplots(figsize=(5, 4.6))
    for name, (truth, probability) in curves.items():
        bins = int(np.clip(len(truth) // 8, 2, 10))
        CalibrationDisplay.from_predictions(truth, probability, n_bins=bins, strategy="quantile", name=name, ax=ax)
    ax.set(title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize="small")
    return fig


def regression(truth: np.ndarray, predicted: np.ndarray, title: str):
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.scatter(truth, predicted, s=14, alpha=0.7)
    ends = [min(truth.min(), predicted.min()), max(truth.max(), predicted.max())]
    ax.plot(ends, ends, ":", color="grey")
    ax.set(xlabel="true", ylabel="predicted", title=title)
    return fig


def risk_groups(risk: np.ndarray, groups: int) -> np.ndarray:
    """Each slide's group by quantiles of predicted risk: 0 the lowest.

    >>> risk_groups(np.array([0.3, 0.1, 0.9, 0.5]), 2).tolist()
    [0, 0, 1, 1]
    """
    edges = np.quantile(risk, np.linspace(0, 1, groups + 1)[1:-1])
    return np.searchsorted(edges, risk, side="right")


GROUP_NAMES = {2: ["low risk", "high risk"], 3: ["low risk", "middle", "high risk"]}


def kaplan_meier(time: np.ndarray, event: np.ndarray, risk: np.ndarray, groups: int, title: str):
    """Kaplan–Meier curves of the risk groups, their at-risk counts, and the log-rank p-value."""
    group = risk_groups(risk, groups)
    p = float(multivariate_logrank_test(time, group, event).p_value)
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    fitters = []
    for g, name in enumerate(GROUP_NAMES[groups]):
        if (group == g).any():
            fitters.append(KaplanMeierFitter(label=name).fit(time[group == g], event[group == g]))
            fitters[-1].plot_survival_function(ax=ax, ci_show=False)
    add_at_risk_counts(*fitters, ax=ax, rows_to_show=["At risk"])
    ax.set(xlabel="time", ylabel="survival", title=f"{title}\nlog-rank p = {p:.3g}", ylim=(0, 1.02))
    return fig, p


def lines(series: dict[str, dict[str, tuple[list, list]]], title: str, log_y: tuple[str, ...] = ()):
    """Panels of lines, two a row: panel name → line name → (x, y)."""
    rows, columns = -(-len(series) // 2), min(len(series), 2)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(series) :]:
        ax.axis("off")
    for ax, (panel, drawn) in zip(axes.flat, series.items()):
        for name, (x, y) in drawn.items():
            style = "--" if name.endswith("(stopped)") else "-"
            ax.plot(x, y, style, marker=".", label=name)
        ax.set(title=panel, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if panel in log_y:
            ax.set_yscale("log")
        if 1 < len(drawn) <= 12:
            ax.legend(fontsize="x-small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def against(values: list, metric: list[float], name: str, metric_name: str):
    """One hyperparameter against the metric: a scatter, categories spread along x."""
    fig, ax = plt.subplots(figsize=(3.8, 3.2))
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if numeric:
        ax.scatter(values, metric, s=18)
        positive = min(values) > 0
        if positive and max(values) / min(values) > 50:
            ax.set_xscale("log")
    else:
        labels = sorted({str(v) for v in values})
        ax.scatter([labels.index(str(v)) for v in values], metric, s=18)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="small")
    ax.set(xlabel=name, ylabel=metric_name)
    return fig


def mosaic(tiles: list[tuple[str, np.ndarray, np.ndarray, tuple[int, int], float]], columns: int = 6):
    """Slide thumbnails with their tissue cells outlined: (title, RGB thumbnail, tissue cells as a
    boolean grid, level-0 size (height, width), level-0 pixels a cell side)."""
    rows = -(-len(tiles) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, thumbnail, tissue, (height, width), cell_px) in zip(axes.flat, tiles):
        ax.imshow(thumbnail, extent=(0, width, height, 0))
        if tissue.any():
            # Padded with background so that tissue at the grid's edge is outlined there too.
            H, W = tissue.shape
            extent = (-cell_px, (W + 1) * cell_px, (H + 1) * cell_px, -cell_px)
            outline = np.pad(tissue, 1).astype(float)
            ax.contour(outline, levels=[0.5], colors="lime", linewidths=0.8, extent=extent, origin="upper")
        ax.set(xlim=(0, width), ylim=(height, 0))
        ax.set_title(title, fontsize="x-small")
    fig.tight_layout()
    return fig
