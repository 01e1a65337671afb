"""The figures label what they show: values alone without intervals, "v [low, high]" with them."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402

from hybridlib.analysis import plots

POINTS = pd.DataFrame({
    "steps": [0, 30, 30, 30], "ratio_mono": [0.5, 1.0, 0.0, 0.5], "ratio_cross": [0.5, 0.0, 1.0, 0.5],
    "ratio_multi": [0.0, 0.0, 0.0, 0.0], "map_multi": [0.39, 0.558, 0.583, 0.574],
}, index=["baseline", "mono", "cross", "hybrid"])


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
