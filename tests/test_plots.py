"""Every figure of ``hybridlib.analysis.plots`` on small synthetic frames shaped as the analysis makes them
(``analysis.point_scores``, ``per_language_table``, ``pairs_matrix``, ``p_value_matrix``, ``probe_scores``,
``centring_effect``, ``alpha_confidence_sets``, a run's projection tables and step log): what each one shows
(panels, titles and labels, how many bars / points / lines / cells, the value labels, colour bars), and that
``plots.save`` writes a PNG. The figures label what they show: values alone without intervals, "v [low, high]"
with them."""

import inspect
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection, QuadMesh  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from hybridlib.analysis import plots  # noqa: E402
from hybridlib.analysis.results import CENTRING_MEASURES, INTERVAL_METRICS, metric_key, run_label  # noqa: E402

LANGS = ["ar", "de", "en", "zh"]
NAN = float("nan")
# the demo sweep's points: (steps, ratio_mono, ratio_cross, ratio_multi); the untrained model first
SPEC = {"baseline": (0, 0.5, 0.5, 0.0), "mono": (30, 1.0, 0.0, 0.0), "cross": (30, 0.0, 1.0, 0.0),
        "hybrid-paper": (30, 0.5, 0.5, 0.0), "multi": (30, 0.0, 0.0, 1.0), "thirds": (30, 1 / 3, 1 / 3, 1 / 3)}
PARAMS = {point: {"steps": s, "ratio_mono": m, "ratio_cross": c, "ratio_multi": x, "mix": "per_batch"}
          for point, (s, m, c, x) in SPEC.items()}

# the existing ternary tests' frame: four points, the untrained one off the simplex
POINTS = pd.DataFrame({
    "steps": [0, 30, 30, 30], "ratio_mono": [0.5, 1.0, 0.0, 0.5], "ratio_cross": [0.5, 0.0, 1.0, 0.5],
    "ratio_multi": [0.0, 0.0, 0.0, 0.0], "map_multi": [0.39, 0.558, 0.583, 0.574],
}, index=["baseline", "mono", "cross", "hybrid"])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------------------ frames


def base_value(key: str, i: int) -> float:
    """A plausible score for point number ``i``: mAPs in (0.3, 0.8), rank distance in the hundreds."""
    if key.startswith("rank_distance"):
        return 300.0 - 20 * i
    if key.startswith("top10_same_language"):
        return 0.40 - 0.03 * i
    return 0.45 + 0.02 * i + (0.2 if "mono" in key else 0.1 if "cross" in key else 0.0)


def point_frame(metrics=INTERVAL_METRICS, intervals: bool = True) -> pd.DataFrame:
    """``analysis.point_scores``: one row per point (index "point"), NaN ratios for the untrained one; per
    metric key its mean, ``_low``, ``_high`` and ``_seed_std`` (``intervals=False``: a per-run table's columns)."""
    rows = []
    for i, (point, params) in enumerate(PARAMS.items()):
        trained = params["steps"] > 0
        row = {"point": point, "label": run_label(params), "steps": params["steps"], "seeds": 3 if trained else 1,
               **{f"ratio_{k}": params[f"ratio_{k}"] if trained else NAN for k in ("mono", "cross", "multi")}}
        for metric, setting in metrics:
            key = metric_key(metric, setting)
            value = base_value(key, i)
            row[key] = value
            if intervals:
                spread = 0.1 * value if key.startswith("rank_distance") else 0.02
                row.update({f"{key}_low": value - spread, f"{key}_high": value + 1.5 * spread,
                            f"{key}_seed_std": spread / 2})
        rows.append(row)
    return pd.DataFrame(rows).set_index("point")


def long_table(seeds: int = 3, settings=("mono", "cross", "multi", "rank_distance", "top10_same_language")):
    """``analysis.per_language_table``: run, point, lang, setting, value (one run per seed of a point)."""
    rows = []
    for i, point in enumerate(PARAMS):
        runs = [point] if point == "baseline" else [f"{point}-s{s}" for s in range(seeds)]
        for s, run in enumerate(runs):
            for j, lang in enumerate(LANGS):
                for setting in settings:
                    rows.append((run, point, lang, setting, base_value(setting, i) + 0.01 * j + 0.005 * s))
    return pd.DataFrame(rows, columns=["run", "point", "lang", "setting", "value"])


def pairs_frame(shift: float = 0.0) -> pd.DataFrame:
    """``analysis.pairs_matrix``: query language x corpus language mAP, the diagonal (mono) highest."""
    values = [[0.8 - 0.05 * abs(i - j) + shift for j in range(len(LANGS))] for i in range(len(LANGS))]
    return pd.DataFrame(values, index=LANGS, columns=LANGS, dtype=float)


def p_matrix(names=("baseline", "mono", "cross", "hybrid-paper")) -> pd.DataFrame:
    """``analysis.p_value_matrix``: symmetric, NaN on the diagonal."""
    matrix = pd.DataFrame(NAN, index=list(names), columns=list(names))
    for i, a in enumerate(names):
        for j, b in enumerate(names[i + 1:], i + 1):
            matrix.loc[a, b] = matrix.loc[b, a] = round(0.0004 + 0.031 * (i + 1) * j, 4)
    return matrix


def projection_frame(axes=("pc1", "pc2"), per_lang: int = 25, seed: int = 0) -> pd.DataFrame:
    """A run's ``projection-<benchmark>.csv.gz`` (PCA) or ``projection-lda-...`` table."""
    rng = np.random.default_rng(seed)
    rows = [{"candidate_id": f"{lang}:0:{k // 5}:{k % 5}", "lang": lang, axes[0]: rng.normal(j, 0.3),
             axes[1]: rng.normal(-j, 0.3)} for j, lang in enumerate(LANGS) for k in range(per_lang)]
    return pd.DataFrame(rows, columns=["candidate_id", "lang", *axes])


def probe_frame() -> pd.DataFrame:
    """``analysis.probe_scores``: accuracy, Wilson interval, chance 1/L per point."""
    rows = []
    for i, (point, params) in enumerate(PARAMS.items()):
        accuracy = 0.98 - 0.04 * i
        rows.append({"point": point, "label": run_label(params), "steps": params["steps"], "seeds": 3,
                     "language_probe": accuracy, "language_probe_low": accuracy - 0.012,
                     "language_probe_high": min(accuracy + 0.01, 1.0), "language_probe_seed_std": 0.004,
                     "chance": 1 / len(LANGS), "folds": 5, "candidates": 1496,
                     "split": "translated paragraphs (GroupKFold)"})
    return pd.DataFrame(rows).set_index("point")


def centring_frame(points=("baseline", "mono", "hybrid-paper")) -> pd.DataFrame:
    """``analysis.centring_effect``: every ``CENTRING_MEASURES`` column with ``_low`` / ``_high``."""
    rows = []
    for i, point in enumerate(points):
        params = PARAMS[point]
        v = {"map_mono": 0.75 + 0.01 * i, "map_multi": 0.55 + 0.02 * i, "map_mono_centred": 0.755 + 0.01 * i,
             "map_multi_centred": 0.58 + 0.02 * i, "rank_distance": 300.0 - 50 * i,
             "rank_distance_centred": 240.0 - 50 * i}
        v["map_multi_gain"] = v["map_multi_centred"] - v["map_multi"]
        v["map_gap"] = v["map_mono"] - v["map_multi"]
        v["map_gap_centred"] = v["map_mono_centred"] - v["map_multi_centred"]
        v["map_gap_closed"] = 1 - v["map_gap_centred"] / v["map_gap"]
        v["rank_distance_removed"] = 1 - v["rank_distance_centred"] / v["rank_distance"]
        row = {"point": point, "label": run_label(params), "steps": params["steps"], "seeds": 3}
        for name in CENTRING_MEASURES:
            width = abs(v[name]) * 0.05 + 0.005
            row.update({name: v[name], f"{name}_low": v[name] - width, f"{name}_high": v[name] + width})
        rows.append(row)
    return pd.DataFrame(rows).set_index("point")


def alpha_table(scores: dict[str, float], alphas: dict[str, float], lower_is_better: bool = False,
                worse: tuple = ()) -> pd.DataFrame:
    """``analysis.best_alpha``: one row per edge point by alpha; ``worse``: the points outside the set."""
    columns = ["point", "alpha", "seeds", "score", "difference", "low", "high", "p_value", "p_holm", "best", "in_set"]
    if not scores:
        return pd.DataFrame(columns=columns)
    best = (min if lower_is_better else max)(scores, key=scores.get)
    rows = []
    for point in sorted(scores, key=alphas.get):
        d = scores[point] - scores[best]
        is_best = point == best
        rows.append({"point": point, "alpha": alphas[point], "seeds": 3, "score": scores[point], "difference": d,
                     "low": d - 0.01, "high": d + 0.01, "p_value": NAN if is_best else 0.004 if point in worse else 0.3,
                     "p_holm": NAN if is_best else 0.008 if point in worse else 0.3, "best": is_best,
                     "in_set": is_best or point not in worse})
    return pd.DataFrame(rows, columns=columns)


def step_log(steps: int = 24) -> list[dict]:
    """``train``'s step records (the keys the figure reads, and a few it ignores)."""
    kinds = ["mono", "cross", "multi"]
    return [{"step": s, "kind": kinds[s % 3], "source": "mlqa-r", "batch_size": 32, "loss": 3.0 - 0.1 * s + 0.05 * (s % 2),
             "accuracy": min(0.3 + 0.025 * s, 1.0), "lr": 3e-5, "grad_norm": 2.0, "seconds": 0.5}
            for s in range(1, steps + 1)]


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def errorbars(ax) -> list[ErrorbarContainer]:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def bars(ax) -> list[Rectangle]:
    return [p for c in ax.containers if isinstance(c, BarContainer) for p in c.patches]


def scatters(ax) -> list[PathCollection]:
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def visible_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.axison]


# ------------------------------------------------------------------------------------------ coverage


def public_functions() -> list[str]:
    return sorted(name for name, f in inspect.getmembers(plots, inspect.isfunction)
                  if f.__module__ == plots.__name__ and not name.startswith("_"))


def test_every_public_function_of_plots_has_a_test():
    tests = [name for name, f in globals().items() if name.startswith("test_") and callable(f)]
    missing = [name for name in public_functions()
               if not any(t == f"test_{name}" or t.startswith(f"test_{name}_") for t in tests)]
    assert len(public_functions()) >= 12, public_functions()
    assert missing == [], f"plots functions without a test named test_<function>_...: {missing}"


# ------------------------------------------------------------------------------------------ value_labels


def test_value_labels_values_alone_without_an_interval():
    assert plots.value_labels(POINTS, "map_multi") == ["0.390", "0.558", "0.583", "0.574"]
    assert plots.value_labels(POINTS, "map_multi", digits=2) == ["0.39", "0.56", "0.58", "0.57"]
    only_low = POINTS.assign(map_multi_low=POINTS.map_multi - 0.01)  # half an interval is no interval
    assert plots.value_labels(only_low, "map_multi")[0] == "0.390"


def test_value_labels_with_an_interval():
    points = POINTS.assign(map_multi_low=POINTS.map_multi - 0.03, map_multi_high=POINTS.map_multi + 0.04)
    assert plots.value_labels(points, "map_multi") == ["0.390\n[0.360, 0.430]", "0.558\n[0.528, 0.598]",
                                                       "0.583\n[0.553, 0.623]", "0.574\n[0.544, 0.614]"]


# ------------------------------------------------------------------------------------------ ternary


def value_texts(fig) -> list[str]:
    """The annotations of the points (the corner names end in 'only')."""
    return [t.get_text() for t in fig.axes[0].texts if not t.get_text().endswith("only")]


def test_ternary_without_intervals_shows_values_only():
    texts = value_texts(plots.ternary(POINTS, "map_multi"))
    assert sorted(texts) == ["0.558", "0.574", "0.583"]  # the untrained baseline is not on the simplex


def test_ternary_with_intervals_shows_them():
    points = POINTS.assign(map_multi_low=POINTS.map_multi - 0.03, map_multi_high=POINTS.map_multi + 0.04)
    texts = value_texts(plots.ternary(points, "map_multi"))
    assert "0.583\n[0.553, 0.623]" in texts and len(texts) == 3


def test_ternary_places_each_fine_tuned_point_by_its_ratios_with_a_colour_bar():
    points = point_frame()
    fig = plots.ternary(points, "map_multi", "pooled mAP")
    ax, colorbar = fig.axes  # the simplex and its colour bar
    assert ax.get_title() == "pooled mAP over the batch-kind simplex"
    assert colorbar.get_ylabel() == "pooled mAP"
    assert sorted(t for t in texts(ax) if t.endswith("only")) == ["cross only", "mono only", "multi only"]
    (dots,) = scatters(ax)
    trained = points[points.steps > 0]
    h = math.sqrt(3) / 2
    expected = {"mono": (0, 0), "cross": (1, 0), "hybrid-paper": (0.5, 0), "multi": (0.5, h), "thirds": (0.5, h / 3)}
    assert np.allclose(dots.get_offsets(), [expected[p] for p in trained.index])
    assert np.allclose(dots.get_array(), trained["map_multi"])  # coloured by the column
    assert sorted(value_texts(fig)) == sorted(plots.value_labels(trained, "map_multi"))
    assert all("\n[" in t for t in value_texts(fig))


# ------------------------------------------------------------------------------------------ metric_vs_ratio


def test_metric_vs_ratio_one_panel_per_ratio_with_intervals_and_the_baseline():
    points = point_frame()
    trained = points[points.steps > 0]
    fig = plots.metric_vs_ratio(points, "map", baseline=points.loc["baseline", "map_multi"])
    assert len(fig.axes) == 3
    assert [ax.get_xlabel() for ax in fig.axes] == [f"ratio of {k} batches" for k in ("mono", "cross", "multi")]
    assert fig.axes[0].get_ylabel() == "map (mean, 95% CI)"
    for ax, kind in zip(fig.axes, ("mono", "cross", "multi")):
        containers = errorbars(ax)
        assert len(containers) == 3  # mono, cross, multi mAP
        for container, setting in zip(containers, ("mono", "cross", "multi")):
            line, _, (bar_lines,) = container.lines
            assert np.allclose(line.get_xdata(), trained[f"ratio_{kind}"])
            assert np.allclose(line.get_ydata(), trained[f"map_{setting}"])  # the untrained point is left out
            assert container.has_yerr and len(bar_lines.get_segments()) == len(trained)
            lows = [min(seg[:, 1]) for seg in bar_lines.get_segments()]
            assert np.allclose(lows, trained[f"map_{setting}_low"])
        baseline = [line for line in ax.get_lines() if line.get_label() == "no fine-tuning (multi)"]
        assert len(baseline) == 1 and np.allclose(baseline[0].get_ydata(), points.loc["baseline", "map_multi"])
        assert ax.get_xlim() == pytest.approx((-0.05, 1.05))
    assert sorted(legend_texts(fig.axes[-1])) == ["cross map", "mono map", "multi map", "no fine-tuning (multi)"]


def test_metric_vs_ratio_a_per_run_table_has_no_error_bars():
    table = point_frame(intervals=False)
    fig = plots.metric_vs_ratio(table, "map")
    assert fig.axes[0].get_ylabel() == "map"
    for ax in fig.axes:
        assert [c.has_yerr for c in errorbars(ax)] == [False, False, False]
        assert not [line for line in ax.get_lines() if line.get_label() == "no fine-tuning (multi)"]
    assert legend_texts(fig.axes[-1]) == ["mono map", "cross map", "multi map"]


# ------------------------------------------------------------------------------------------ p_value_heatmap


def test_p_value_heatmap_annotates_every_pair_with_a_colour_bar():
    matrix = p_matrix()
    fig = plots.p_value_heatmap(matrix, "pooled mAP: paired test p-values")
    ax, colorbar = fig.axes
    assert ax.get_title() == "pooled mAP: paired test p-values"
    assert colorbar.get_ylabel() == "p"
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    assert mesh.get_array().size == len(matrix) ** 2
    assert mesh.norm.vmin == 0 and mesh.norm.vmax == 0.2  # below 0.05 stands out
    pairs = matrix.stack().dropna()  # the off-diagonal cells; the diagonal has no test
    assert sorted(texts(ax)) == sorted(f"{p:.3f}" for p in pairs)
    assert len(texts(ax)) == len(matrix) * (len(matrix) - 1)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(matrix.columns)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(matrix.index)


def test_p_value_heatmap_default_title():
    fig = plots.p_value_heatmap(p_matrix(("mono", "cross")))
    assert fig.axes[0].get_title() == "paired test p-values" and texts(fig.axes[0]) == ["0.031", "0.031"]


# ------------------------------------------------------------------------------------------ per_language_bars


def test_per_language_bars_one_bar_per_language_and_point_spanning_the_seeds():
    long = long_table(seeds=3)
    fig = plots.per_language_bars(long, "multi")
    (ax,) = fig.axes
    assert ax.get_ylabel() == "mAP (multi)" and ax.get_xlabel() == "lang"
    assert [t.get_text() for t in ax.get_xticklabels()] == LANGS
    assert legend_texts(ax) == list(PARAMS)  # hue: the point (its seeds pooled), not one bar per run
    heights = [p.get_height() for p in bars(ax)]
    assert len(heights) == len(LANGS) * len(PARAMS)
    data = long[long.setting == "multi"]
    means = data.groupby(["point", "lang"], sort=False)["value"].mean()
    assert np.allclose(sorted(heights), sorted(means))
    # the error bar of each bar is the seed range (errorbar=("pi", 100)): min to max over the runs
    # (seaborn draws none for a single run: the untrained point)
    ranges = data.groupby(["point", "lang"])["value"].agg(["min", "max", "count"])
    spans = sorted((round(min(line.get_ydata()), 6), round(max(line.get_ydata()), 6)) for line in ax.get_lines()
                   if np.isfinite(line.get_ydata()).all())
    assert spans == sorted((round(lo, 6), round(hi, 6)) for lo, hi, n in ranges.to_numpy() if n > 1)
    assert len(spans) == len(LANGS) * (len(PARAMS) - 1)


def test_per_language_bars_one_run_per_point_shows_runs_and_the_ylabel():
    long = long_table(seeds=1)
    fig = plots.per_language_bars(long, "rank_distance", ylabel="rank distance")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "rank distance (rank_distance)"
    runs = list(dict.fromkeys(long["run"]))
    assert legend_texts(ax) == runs  # as many points as runs: one bar per run
    assert len(bars(ax)) == len(LANGS) * len(runs)
    assert max(p.get_height() for p in bars(ax)) == pytest.approx(long[long.setting == "rank_distance"].value.max())


# ------------------------------------------------------------------------------------------ pair_heatmaps


def test_pair_heatmaps_one_panel_per_run_on_a_shared_scale():
    matrices = {"baseline: no fine-tuning": pairs_frame(-0.2), "mono: 1/0/0 per_batch": pairs_frame(0.0),
                "cross: 0/1/0 per_batch": pairs_frame(0.05), "hybrid-paper: 0.5/0.5/0 per_batch": pairs_frame(0.02)}
    fig = plots.pair_heatmaps(matrices)  # 3 columns: 2 rows, 2 panels left empty
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(matrices)
    lowest, highest = min(m.min().min() for m in matrices.values()), max(m.max().max() for m in matrices.values())
    for ax, matrix in zip(panels, matrices.values()):
        assert ax.get_xlabel() == "corpus language" and ax.get_ylabel() == "query language"
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        assert mesh.get_array().size == len(LANGS) ** 2
        assert np.allclose(np.asarray(mesh.get_array()).ravel(), matrix.to_numpy().ravel())
        assert (mesh.norm.vmin, mesh.norm.vmax) == pytest.approx((lowest, highest))
        assert [t.get_text() for t in ax.get_xticklabels()] == LANGS
    assert len(fig.axes) == 6 + len(matrices)  # 2 x 3 grid and one colour bar per heatmap
    assert len(visible_axes(fig)) == 2 * len(matrices)  # the two unused panels are switched off


def test_pair_heatmaps_one_column_and_a_fixed_scale():
    fig = plots.pair_heatmaps({"mono-s0 (xquad-r)": pairs_frame()}, columns=1, vmin=0, vmax=1)  # as 02_train does
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "mono-s0 (xquad-r)"
    mesh = fig.axes[0].collections[0]
    assert (mesh.norm.vmin, mesh.norm.vmax) == (0, 1)


# ------------------------------------------------------------------------------------------ projections


def test_projections_one_panel_per_frame_coloured_by_language():
    frames = {"baseline: no fine-tuning, PCA": projection_frame(), "baseline: no fine-tuning, LDA":
              projection_frame(("ld1", "ld2"), seed=1), "mono-s0: 1/0/0 per_batch, PCA": projection_frame(seed=2)}
    fig = plots.projections(frames, columns=2)  # 2 x 2, one empty
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(frames)
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in panels] == [("pc1", "pc2"), ("ld1", "ld2"), ("pc1", "pc2")]
    for ax, frame in zip(panels, frames.values()):
        (dots,) = scatters(ax)
        assert len(dots.get_offsets()) == len(frame)  # fewer than `sample`: every candidate
    assert legend_texts(panels[0]) == sorted(LANGS)  # one legend, on the first panel
    assert all(ax.get_legend() is None for ax in panels[1:])
    assert len(fig.axes) == 4 and len(visible_axes(fig)) == 3


def test_projections_sample_the_candidates():
    fig = plots.projections({"run, PCA": projection_frame(per_lang=50)}, sample=60)
    (dots,) = scatters(fig.axes[0])
    assert len(dots.get_offsets()) == 60
    again = plots.projections({"run, PCA": projection_frame(per_lang=50)}, sample=60)  # seeded: the same sample
    assert np.allclose(scatters(again.axes[0])[0].get_offsets(), dots.get_offsets())


# ------------------------------------------------------------------------------------------ probe_accuracy


def test_probe_accuracy_bars_intervals_values_and_chance():
    probes = probe_frame()
    fig = plots.probe_accuracy(probes)
    (ax,) = fig.axes
    assert ax.get_title().startswith("language-identity probe")
    assert ax.get_ylabel() == "probe accuracy (95% interval)" and ax.get_ylim() == pytest.approx((0, 1.08))
    assert np.allclose([p.get_height() for p in bars(ax)], probes["language_probe"])
    (container,) = errorbars(ax)
    lows = [min(seg[:, 1]) for seg in container.lines[2][0].get_segments()]
    assert np.allclose(lows, probes["language_probe_low"])
    shown = texts(ax)
    assert [t for t in shown if "chance" not in t] == [f"{v:.3f}" for v in probes["language_probe"]]
    assert " chance 1/L" in shown
    chance = [line for line in ax.get_lines() if np.allclose(line.get_ydata(), probes["chance"].iloc[0])]
    assert len(chance) == 1
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{p}\n{lab}" for p, lab in zip(probes.index,
                                                                                                probes["label"])]


# ------------------------------------------------------------------------------------------ centring_effect


def test_centring_effect_two_panels_of_grouped_bars_and_the_shares_in_the_titles():
    effect = centring_frame()
    fig = plots.centring_effect(effect)
    left, right = fig.axes
    assert left.get_ylabel() == "mAP" and right.get_ylabel() == "rank distance (lower: less bias)"
    assert legend_texts(left) == ["mono mAP", "pooled mAP", "pooled mAP, centred"]
    assert legend_texts(right) == ["rank distance", "rank distance, centred"]
    assert len(bars(left)) == 3 * len(effect) and len(bars(right)) == 2 * len(effect)
    left_groups = [c for c in left.containers if isinstance(c, BarContainer)]
    for container, key in zip(left_groups, ("map_mono", "map_multi", "map_multi_centred")):
        assert np.allclose([p.get_height() for p in container.patches], effect[key])
    right_groups = [c for c in right.containers if isinstance(c, BarContainer)]
    assert np.allclose([p.get_height() for p in right_groups[1].patches], effect["rank_distance_centred"])
    assert all(c.errorbar is not None for c in left_groups + right_groups)  # every bar has its interval
    closed = ", ".join(f"{p} {v:.0%}" for p, v in zip(effect.index, effect["map_gap_closed"]))
    assert left.get_title() == f"share of the pooled gap closed by centring: {closed}"
    assert right.get_title().startswith("share of the rank distance removed: baseline 20%")
    ticks = [t.get_text() for t in left.get_xticklabels()]
    assert ticks == [f"{p}\n{lab}" for p, lab in zip(effect.index, effect["label"])]


# ------------------------------------------------------------------------------------------ metric_vs_alpha


def alpha_inputs():
    """The demo's mono-cross edge: cross-only best on pooled mAP, mono-only shown worse; on rank distance (lower
    is better) cross-only best and every alpha in the set."""
    points = point_frame()
    edge = {"cross": 0.0, "hybrid-paper": 0.5, "mono": 1.0}
    for point, map_multi, rank_distance in (("cross", 0.583, 229.0), ("hybrid-paper", 0.574, 236.0),
                                            ("mono", 0.558, 288.0)):
        points.loc[point, ["map_multi", "map_multi_low", "map_multi_high"]] = map_multi, map_multi - 0.02, map_multi + 0.03
        points.loc[point, ["rank_distance", "rank_distance_low", "rank_distance_high"]] = (
            rank_distance, rank_distance - 20, rank_distance + 30)
    sets = {"map_multi": alpha_table({p: points.loc[p, "map_multi"] for p in edge}, edge, worse=("mono",)),
            "rank_distance": alpha_table({p: points.loc[p, "rank_distance"] for p in edge}, edge,
                                         lower_is_better=True),
            "recall@10_multi": alpha_table({}, {})}  # a score without an edge point: no row
    return points, sets


def test_metric_vs_alpha_one_row_per_score_marks_the_set_and_the_best():
    points, sets = alpha_inputs()
    fig = plots.metric_vs_alpha(points, sets)
    assert len(fig.axes) == 4  # 2 scores (the empty one left out) x (score, difference from the best)
    left, right = fig.axes[0], fig.axes[1]
    assert left.get_title() == "map_multi: best alpha 0, confidence set {0, 0.5}"
    assert right.get_title() == "map_multi: alpha - best (paired 95% CI)"
    assert left.get_ylabel() == "map_multi\n(mean, 95% CI)"
    assert texts(left) == [f"no fine-tuning: {points.loc['baseline', 'map_multi']:.3g}"]
    score = points["map_multi"]
    in_set, worse, best = scatters(left)
    assert np.allclose(in_set.get_offsets(), [[0.0, score["cross"]], [0.5, score["hybrid-paper"]]])
    assert np.allclose(worse.get_offsets(), [[1.0, score["mono"]]])
    assert np.allclose(best.get_offsets(), [[0.0, score["cross"]]])
    curve = left.get_lines()[0]  # the line through the points (drawn first; the rest are error-bar caps)
    assert np.allclose(curve.get_xdata(), [0, 0.5, 1]) and np.allclose(curve.get_ydata(), score[list(sets["map_multi"].point)])
    (bars_left,) = errorbars(left)
    lows = sorted(min(seg[:, 1]) for seg in bars_left.lines[2][0].get_segments())
    assert np.allclose(lows, sorted(points.loc[["cross", "hybrid-paper", "mono"], "map_multi_low"]))
    table = sets["map_multi"]
    assert np.allclose(scatters(right)[2].get_offsets(), [[0.0, 0.0]])  # the best: no difference from itself
    assert np.allclose(right.get_lines()[0].get_ydata(), table["difference"])
    assert [c.has_yerr for c in errorbars(right)] == [True]
    assert any(np.allclose(line.get_ydata(), 0) for line in right.get_lines()[1:])  # the zero line
    assert legend_texts(right) == ["in the confidence set", "worse than the best (Holm)", "best"]
    assert fig.axes[2].get_title() == "rank_distance: best alpha 0, confidence set {0, 0.5, 1}"
    assert len(scatters(fig.axes[2])[1].get_offsets()) == 0  # none worse
    assert all(ax.get_xlabel() == "alpha = share of mono batches (the rest cross)" for ax in fig.axes[2:])
    assert all(ax.get_xlim() == pytest.approx((-0.05, 1.05)) for ax in fig.axes)


def test_metric_vs_alpha_keys_select_the_rows_and_no_baseline_no_note():
    points, sets = alpha_inputs()
    trained = points[points.steps > 0]
    fig = plots.metric_vs_alpha(trained, sets, keys=["rank_distance"])
    assert len(fig.axes) == 2 and fig.axes[0].get_title().startswith("rank_distance: best alpha 0")
    assert texts(fig.axes[0]) == []  # no untrained point: no note


def test_metric_vs_alpha_without_any_edge_is_an_empty_figure():
    points, sets = alpha_inputs()
    fig = plots.metric_vs_alpha(points, {"recall@10_multi": sets["recall@10_multi"]})
    assert len(fig.axes) == 2 and all(not ax.get_title() and not scatters(ax) for ax in fig.axes)


# ------------------------------------------------------------------------------------------ training_curves


def test_training_curves_points_by_kind_and_the_rolling_mean():
    log = step_log(24)
    fig = plots.training_curves(log, window=5)
    assert [ax.get_title() for ax in fig.axes] == ["in-batch loss per step", "in-batch accuracy per step"]
    frame = pd.DataFrame(log)
    for ax, column in zip(fig.axes, ("loss", "accuracy")):
        assert ax.get_xlabel() == "step" and ax.get_ylabel() == column
        (dots,) = scatters(ax)
        assert len(dots.get_offsets()) == len(log)
        assert np.allclose(sorted(dots.get_offsets()[:, 1]), sorted(frame[column]))
        (mean,) = [line for line in ax.get_lines() if line.get_label() == "rolling mean (5)"]
        assert np.allclose(mean.get_ydata(), frame[column].rolling(5, min_periods=1).mean())
        assert set(legend_texts(ax)) == {"mono", "cross", "multi", "rolling mean (5)"}


def test_training_curves_no_steps():
    fig = plots.training_curves([])
    assert [ax.get_title() for ax in fig.axes] == ["loss: no training steps", "accuracy: no training steps"]
    assert all(not scatters(ax) and not ax.get_lines() for ax in fig.axes)


# ------------------------------------------------------------------------------------------ save


def test_save_writes_a_png_and_nothing_without_a_folder(tmp_path):
    fig = plots.ternary(point_frame(), "map_multi")
    folder = tmp_path / "figures" / "nested"  # created
    plots.save(fig, folder, "ternary_map_multi-xquad-r")
    written = folder / "ternary_map_multi-xquad-r.png"
    data = written.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in folder.iterdir()] == [written.name]
    plots.save(fig, None, "not-written")
    plots.save(fig, "", "not-written")
    assert not list(tmp_path.rglob("not-written*"))


@pytest.mark.parametrize("name", ["metric_vs_ratio", "p_value_heatmap", "per_language_bars", "pair_heatmaps",
                                  "projections", "probe_accuracy", "centring_effect", "metric_vs_alpha",
                                  "training_curves"])
def test_save_every_figure_as_a_png(tmp_path, name):
    points, sets = alpha_inputs()
    figures = {"metric_vs_ratio": lambda: plots.metric_vs_ratio(points, "map", 0.45),
               "p_value_heatmap": lambda: plots.p_value_heatmap(p_matrix()),
               "per_language_bars": lambda: plots.per_language_bars(long_table(), "multi"),
               "pair_heatmaps": lambda: plots.pair_heatmaps({"a": pairs_frame(), "b": pairs_frame(0.1)}),
               "projections": lambda: plots.projections({"a, PCA": projection_frame()}),
               "probe_accuracy": lambda: plots.probe_accuracy(probe_frame()),
               "centring_effect": lambda: plots.centring_effect(centring_frame()),
               "metric_vs_alpha": lambda: plots.metric_vs_alpha(points, sets),
               "training_curves": lambda: plots.training_curves(step_log())}
    plots.save(figures[name](), tmp_path, name)
    data = (tmp_path / f"{name}.png").read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 5_000


# ------------------------------------------------------------------------------------------ any task's headline
def overview(key: str, values: dict) -> dict:
    """``analysis.task_overview``'s points and headline for plots: mean and a 95% interval per point."""
    points = pd.DataFrame({key: values, f"{key}_low": {p: v - 0.02 for p, v in values.items()},
                           f"{key}_high": {p: v + 0.01 for p, v in values.items()}})
    return {"points": points, "headline": key, "best": max(values, key=values.get)}


def test_task_headlines_one_panel_per_task_with_intervals_and_the_best_darker():
    fig = plots.task_headlines({"xquad-r": overview("map_multi", {"baseline": 0.34, "mono": 0.55, "cross": 0.57}),
                                "tatoeba": overview("accuracy_en_xx", {"baseline": 0.90, "mono": 0.93, "cross": 0.95})})
    assert [ax.get_title() for ax in fig.axes] == ["xquad-r: map_multi (mean over seeds, 95% CI)",
                                                   "tatoeba: accuracy_en_xx (mean over seeds, 95% CI)"]
    bars = fig.axes[1].patches
    assert [round(b.get_height(), 2) for b in bars] == [0.90, 0.93, 0.95]
    assert bars[2].get_facecolor() != bars[0].get_facecolor()  # the best point (cross) stands out
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["baseline", "mono", "cross"]
    low, high = fig.axes[1].get_ylim()
    assert low <= 0.88 and high >= 0.96  # every interval visible


def test_bias_against_alignment_one_marker_per_shared_point_with_both_intervals():
    bias = overview("rank_distance", {"baseline": 400.0, "mono": 300.0, "cross": 250.0})["points"]
    alignment = overview("accuracy_en_xx", {"mono": 0.93, "cross": 0.95, "only-here": 0.5})["points"]
    fig = plots.bias_against_alignment(bias, "rank_distance", alignment, "accuracy_en_xx",
                                       labels=("rank distance (XQuAD-R)", "Tatoeba accuracy en->xx"))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["mono", "cross"]  # the points both tables have
    assert ax.get_xlabel() == "rank distance (XQuAD-R)" and ax.get_ylabel() == "Tatoeba accuracy en->xx"
    line = ax.lines[0]
    assert list(line.get_xdata()) == [300.0, 250.0] and [round(v, 2) for v in line.get_ydata()] == [0.93, 0.95]
