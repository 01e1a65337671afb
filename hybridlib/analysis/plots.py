"""Figures shared by the notebooks (seaborn / matplotlib); each returns its matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")


def training_curves(log: list[dict], window: int = 10):
    """Loss and in-batch accuracy per step, coloured by batch kind, with a rolling mean over all kinds."""
    frame = pd.DataFrame(log)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, column in zip(axes, ("loss", "accuracy")):
        if frame.empty:
            ax.set_title(f"{column}: no training steps")
            continue
        sns.scatterplot(data=frame, x="step", y=column, hue="kind", s=12, alpha=0.6, ax=ax)
        ax.plot(frame["step"], frame[column].rolling(window, min_periods=1).mean(), color="black", lw=1.5,
                label=f"rolling mean ({window})")
        ax.set_title(f"in-batch {column} per step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_vs_ratio(points: pd.DataFrame, metric: str = "map", baseline: float | None = None):
    """mono / cross / multi ``metric`` against each ratio, one panel per ratio kind (fine-tuned points only).

    ``points``: ``analysis.point_scores`` (error bars = the 95% bootstrap interval) or a per-run table.
    """
    trained = points[points["steps"] > 0]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, kind in zip(axes, ("mono", "cross", "multi")):
        for setting, marker in zip(("mono", "cross", "multi"), "os^"):
            y = trained[f"{metric}_{setting}"]
            low, high = trained.get(f"{metric}_{setting}_low"), trained.get(f"{metric}_{setting}_high")
            yerr = None if low is None else [y - low, high - y]
            ax.errorbar(trained[f"ratio_{kind}"], y, yerr=yerr, fmt=marker, capsize=3, label=f"{setting} {metric}")
        if baseline is not None:
            ax.axhline(baseline, color="grey", ls="--", lw=1, label="no fine-tuning (multi)")
        ax.set_xlabel(f"ratio of {kind} batches")
        ax.set_xlim(-0.05, 1.05)
    axes[0].set_ylabel(metric + (" (mean, 95% CI)" if f"{metric}_multi_low" in trained else ""))
    axes[-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def value_labels(points: pd.DataFrame, column: str, digits: int = 3) -> list[str]:
    """``"v"`` per row, or ``"v\n[low, high]"`` where the table has the interval columns ``<column>_low/_high``."""
    if f"{column}_low" not in points or f"{column}_high" not in points:
        return [f"{value:.{digits}f}" for value in points[column]]
    return [f"{value:.{digits}f}\n[{low:.{digits}f}, {high:.{digits}f}]"
            for value, low, high in zip(points[column], points[f"{column}_low"], points[f"{column}_high"])]


def ternary(points: pd.DataFrame, column: str = "map_multi", label: str = "pooled mAP"):
    """Each fine-tuned point on the mono/cross/multi simplex, coloured and annotated by ``column``.

    Corners are the pure batch kinds; a point's distance from a corner's opposite edge is its ratio.
    """
    trained = points[points["steps"] > 0]
    corners = {"mono": (0.0, 0.0), "cross": (1.0, 0.0), "multi": (0.5, 3**0.5 / 2)}
    x = sum(trained[f"ratio_{k}"] * xy[0] for k, xy in corners.items())
    y = sum(trained[f"ratio_{k}"] * xy[1] for k, xy in corners.items())
    fig, ax = plt.subplots(figsize=(6.5, 5.8))
    ax.fill(*zip(*corners.values()), color="whitesmoke", ec="grey", lw=1)
    centre = (0.5, 3**0.5 / 6)

    def away_from_centre(px: float, py: float, distance: float) -> tuple[float, float]:
        dx, dy = px - centre[0], py - centre[1]
        norm = (dx * dx + dy * dy) ** 0.5
        return (0.0, -distance) if norm < 1e-9 else (distance * dx / norm, distance * dy / norm)

    for name, (cx, cy) in corners.items():  # corner names outside the triangle
        ax.annotate(f"{name} only", (cx, cy), textcoords="offset points", xytext=away_from_centre(cx, cy, 24),
                    ha="center", va="center", fontsize=10, weight="bold")
    dots = ax.scatter(x, y, c=trained[column], cmap="viridis", s=220, ec="black", zorder=3)
    for xi, yi, text in zip(x, y, value_labels(trained, column)):
        dx, dy = away_from_centre(xi, yi, 30)
        ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(-dx, -dy if dy else -30), ha="center",
                    va="center", fontsize=8)  # values inside the triangle, clear of the corner names
    fig.colorbar(dots, ax=ax, label=label, shrink=0.8)
    ax.set_aspect("equal")
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.2, 1.0)
    ax.axis("off")
    ax.set_title(f"{label} over the batch-kind simplex")
    fig.tight_layout()
    return fig


def p_value_heatmap(matrix: pd.DataFrame, title: str = "paired test p-values"):
    """Point x point p-values, annotated; below 0.05 stands out."""
    fig, ax = plt.subplots(figsize=(1.1 * len(matrix) + 2.5, 0.9 * len(matrix) + 1.5))
    sns.heatmap(matrix, annot=True, fmt=".3f", cmap="rocket", vmin=0, vmax=0.2, cbar_kws={"label": "p"}, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def per_language_bars(long_table: pd.DataFrame, setting: str = "multi", ylabel: str = "mAP"):
    data = long_table[long_table["setting"] == setting]
    fig, ax = plt.subplots(figsize=(14, 4))
    hue = "point" if "point" in data and data["point"].nunique() < data["run"].nunique() else "run"
    sns.barplot(data=data, x="lang", y="value", hue=hue, errorbar=("pi", 100), ax=ax)  # bars: seed range
    ax.set_ylabel(f"{ylabel} ({setting})")
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    return fig


def pair_heatmaps(matrices: dict[str, pd.DataFrame], columns: int = 3, vmin=None, vmax=None):
    """One query-language x corpus-language heatmap per run, on a shared colour scale."""
    names = list(matrices)
    rows = (len(names) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.8 * rows), squeeze=False)
    vmin = vmin if vmin is not None else min(m.min().min() for m in matrices.values())
    vmax = vmax if vmax is not None else max(m.max().max() for m in matrices.values())
    for ax, name in zip(axes.flat, names):
        sns.heatmap(matrices[name], vmin=vmin, vmax=vmax, cmap="viridis", annot=False, square=True, ax=ax, cbar=True)
        ax.set_title(name)
        ax.set_xlabel("corpus language")
        ax.set_ylabel("query language")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def projections(frames: dict[str, pd.DataFrame], columns: int = 3, sample: int = 3000, seed: int = 0):
    """2-D candidate projections coloured by language, one panel per frame (a run's PCA ``pc1/pc2`` or LDA
    ``ld1/ld2`` table: the first two columns other than candidate_id and lang are the axes)."""
    names = list(frames)
    rows = (len(names) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 5 * rows), squeeze=False)
    hue_order = sorted(set().union(*(set(frame["lang"]) for frame in frames.values()))) if frames else None
    for ax, name in zip(axes.flat, names):
        frame = frames[name]
        x, y = [c for c in frame.columns if c not in ("candidate_id", "lang")][:2]
        frame = frame.sample(min(sample, len(frame)), random_state=seed)
        sns.scatterplot(data=frame, x=x, y=y, hue="lang", hue_order=hue_order, s=6, alpha=0.6, ax=ax,
                        legend=ax is axes.flat[0])
        ax.set_title(name)
    if axes.flat[0].get_legend():
        sns.move_legend(axes.flat[0], "upper left", bbox_to_anchor=(0, -0.12), ncol=6, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def probe_accuracy(probes: pd.DataFrame):
    """Language-identity probe accuracy per point (``analysis.probe_scores``) with its interval and chance level."""
    fig, ax = plt.subplots(figsize=(1.3 * len(probes) + 3, 4))
    y = probes["language_probe"]
    ax.bar(range(len(probes)), y, color=sns.color_palette()[0])
    ax.errorbar(range(len(probes)), y, yerr=[y - probes["language_probe_low"], probes["language_probe_high"] - y],
                fmt="none", color="black", capsize=4)
    for i, (value, label) in enumerate(zip(y, probes["label"])):
        ax.annotate(f"{value:.3f}", (i, value), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    chance = probes["chance"].iloc[0] if len(probes) else None
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1)
        ax.text(len(probes) - 0.5, chance, " chance 1/L", va="bottom", ha="right", fontsize=8)
    ax.set_xticks(range(len(probes)), [f"{point}\n{label}" for point, label in zip(probes.index, probes["label"])],
                  fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("probe accuracy (95% interval)")
    ax.set_title("language-identity probe: cross-validated accuracy of predicting a candidate's language")
    fig.tight_layout()
    return fig


def centring_effect(effect: pd.DataFrame):
    """Pooled mAP and rank distance per point before and after per-language mean-centring (``analysis.centring_effect``),
    with 95% intervals; mono mAP for reference."""
    fig, axes = plt.subplots(1, 2, figsize=(max(10, 2.2 * len(effect) + 4), 4.2))
    x = pd.Series(range(len(effect)), dtype=float)
    panels = ((axes[0], [("map_mono", "mono mAP"), ("map_multi", "pooled mAP"),
                         ("map_multi_centred", "pooled mAP, centred")], "mAP"),
              (axes[1], [("rank_distance", "rank distance"), ("rank_distance_centred", "rank distance, centred")],
               "rank distance (lower: less bias)"))
    for ax, series, ylabel in panels:
        width = 0.8 / len(series)
        for j, (key, label) in enumerate(series):
            y = effect[key]
            ax.bar(x + (j - (len(series) - 1) / 2) * width, y, width, label=label,
                   yerr=[y - effect[f"{key}_low"], effect[f"{key}_high"] - y], capsize=3)
        ax.set_xticks(x, [f"{point}\n{label}" for point, label in zip(effect.index, effect["label"])], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    axes[0].set_title("share of the pooled gap closed by centring: " + ", ".join(
        f"{p} {v:.0%}" for p, v in zip(effect.index, effect["map_gap_closed"])), fontsize=8)
    axes[1].set_title("share of the rank distance removed: " + ", ".join(
        f"{p} {v:.0%}" for p, v in zip(effect.index, effect["rank_distance_removed"])), fontsize=8)
    fig.tight_layout()
    return fig


def metric_vs_alpha(points: pd.DataFrame, sets: dict[str, pd.DataFrame], keys=None):
    """Each score on the mono-cross edge against alpha (the share of mono batches, the rest cross), one row per
    score: left, the mean over seeds with its 95% bootstrap interval (``analysis.point_scores``); right, the
    difference from the best alpha with its paired 95% interval (``analysis.alpha_confidence_sets``), which is
    what the confidence set rests on. Filled: in the confidence set for the best alpha; open: worse than the
    best (Holm); star: the best. The untouched model's value, where the sweep has one, is noted in the corner.
    """
    keys = [key for key in (sets if keys is None else keys) if not sets[key].empty]
    fig, axes = plt.subplots(max(len(keys), 1), 2, figsize=(11.5, 2.9 * max(len(keys), 1)), squeeze=False)
    baseline = points[points["steps"] == 0]
    colour = sns.color_palette()[0]
    for (left, right), key in zip(axes, keys):
        table = sets[key]
        rows = points.loc[table["point"]]
        x, keep, best = table["alpha"].to_numpy(float), table["in_set"].to_numpy(bool), table["best"].to_numpy(bool)
        for ax, y, low, high in ((left, rows[key].to_numpy(float), rows.get(f"{key}_low"), rows.get(f"{key}_high")),
                                 (right, table["difference"].to_numpy(float), table["low"], table["high"])):
            yerr = None if low is None else [y - low.to_numpy(float), high.to_numpy(float) - y]
            ax.plot(x, y, color=colour, lw=1, zorder=1)
            ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=colour, capsize=3, zorder=2)
            ax.scatter(x[keep], y[keep], s=45, color=colour, zorder=3, label="in the confidence set")
            ax.scatter(x[~keep], y[~keep], s=45, facecolors="white", edgecolors=colour, zorder=3,
                       label="worse than the best (Holm)")
            ax.scatter(x[best], y[best], s=220, marker="*", color="gold", edgecolors="black", zorder=4, label="best")
            ax.set_xlim(-0.05, 1.05)
        right.axhline(0, color="grey", lw=1, ls="--")
        in_set = ", ".join(f"{a:g}" for a in x[keep])
        left.set_title(f"{key}: best alpha {x[best][0]:g}, confidence set {{{in_set}}}", fontsize=9)
        left.set_ylabel(f"{key}\n(mean, 95% CI)", fontsize=9)
        right.set_title(f"{key}: alpha - best (paired 95% CI)", fontsize=9)
        if len(baseline) and key in baseline:
            left.text(0.99, 0.03, f"no fine-tuning: {baseline[key].iloc[0]:.3g}", transform=left.transAxes,
                      ha="right", va="bottom", fontsize=8, color="grey")
    for ax in axes[-1]:
        ax.set_xlabel("alpha = share of mono batches (the rest cross)")
    if keys:
        axes[0][1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def task_headlines(overviews: dict[str, dict]):
    """One panel per task: every point's headline score (mean over seeds) with its 95% bootstrap interval, the
    best point in a darker colour. ``overviews``: ``{task: analysis.task_overview(...)}``."""
    fig, axes = plt.subplots(1, max(1, len(overviews)), figsize=(6 * max(1, len(overviews)), 4), squeeze=False)
    for ax, (task, overview) in zip(axes[0], overviews.items()):
        points, key = overview["points"], overview["headline"]
        y = points[key]
        colors = ["#1f4e79" if point == overview["best"] else "#7fa7cf" for point in points.index]
        ax.bar(range(len(points)), y, color=colors)
        ax.errorbar(range(len(points)), y, yerr=[y - points[f"{key}_low"], points[f"{key}_high"] - y], fmt="none",
                    ecolor="black", capsize=3)
        ax.set_xticks(range(len(points)), points.index, rotation=45, ha="right")
        low, high = points[f"{key}_low"].min(), points[f"{key}_high"].max()
        ax.set_ylim(max(0.0, low - 0.1 * (high - low + 1e-9)), high + 0.1 * (high - low + 1e-9))
        ax.set_title(f"{task}: {key} (mean over seeds, 95% CI)")
    fig.tight_layout()
    return fig


def bias_against_alignment(bias: pd.DataFrame, bias_key: str, alignment: pd.DataFrame, alignment_key: str,
                           labels: tuple[str, str] | None = None):
    """Each point's language-bias score (x) against another task's alignment score (y), both with 95% intervals:
    does less bias on one task go with better cross-lingual alignment on the other?"""
    shared = [p for p in bias.index if p in alignment.index]
    x, y = bias.loc[shared, bias_key], alignment.loc[shared, alignment_key]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.errorbar(x, y, xerr=[x - bias.loc[shared, f"{bias_key}_low"], bias.loc[shared, f"{bias_key}_high"] - x],
                yerr=[y - alignment.loc[shared, f"{alignment_key}_low"],
                      alignment.loc[shared, f"{alignment_key}_high"] - y], fmt="o", capsize=3)
    for point in shared:
        ax.annotate(point, (x[point], y[point]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(labels[0] if labels else bias_key)
    ax.set_ylabel(labels[1] if labels else alignment_key)
    ax.set_title("language bias against cross-lingual alignment (per point, 95% CI)")
    fig.tight_layout()
    return fig


def save(fig, folder, name: str) -> None:
    """Write ``fig`` as ``folder/name.png`` when a folder is given (the sweep passes one; interactive use need not)."""
    if folder:
        from pathlib import Path

        Path(folder).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(folder) / f"{name}.png", dpi=110, bbox_inches="tight")
