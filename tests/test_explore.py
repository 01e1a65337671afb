"""The explorer (hybridlib.analysis.explore) that notebooks/05_explore.ipynb drives: the same calls its widgets make, on a
tiny sweep of real runs (tiny random model, real XQuAD-R slice) written into a temporary folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from hybridlib import analysis
from hybridlib.analysis import explore
from hybridlib.evaluation.metrics import GOLD_RANKS, TOP_IDS, TOP_K

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "tiny-random", "steps": 3, "batch_size": 8, "max_groups": 30, "eval_languages": ["de", "en", "zh"],
        "query_max_length": 24, "passage_max_length": 32, "checkpoint_every": 0,
        "eval_benchmarks": ["tatoeba", "xquad-r"], "tatoeba_max_pairs": 10}  # a task first that records no top k


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir):
    """baseline (untouched), cross (fine-tuned, model kept), mono (fine-tuned, no model), old (a baseline copy
    recorded before the top ids existed)."""
    from hybridlib.runs.config import resolve_params
    from hybridlib.runs.experiment import run_experiment

    out = tmp_path_factory.mktemp("explore") / "sweep"
    for name, extra in (("baseline", {"steps": 0}), ("cross", {"ratio_mono": 0.0, "ratio_cross": 1.0}),
                        ("mono", {"ratio_mono": 1.0, "ratio_cross": 0.0, "save_model": False})):
        params = resolve_params({**TINY, "save_model": True, **extra, "run_name": name, "output_dir": str(out)},
                                apply_env=False)
        run_experiment(params, progress=False)
    old = out / "old"
    shutil.copytree(out / "baseline", old)
    record = json.loads((old / "metrics.json").read_text())
    record["run_name"] = record["params"]["run_name"] = "old"
    (old / "metrics.json").write_text(json.dumps(record))
    table = pd.read_csv(old / "per_query-xquad-r.csv.gz").drop(columns=[TOP_IDS, GOLD_RANKS])
    table.to_csv(old / "per_query-xquad-r.csv.gz", index=False)
    return out


@pytest.fixture
def explorer(sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path / "cache"))  # candidate embeddings land here
    return explore.Explorer(sweep)


def test_the_explorer_takes_the_lareqa_task_and_refuses_the_others(sweep, explorer):
    assert explorer.benchmark_name == "xquad-r"  # though every run names tatoeba first
    with pytest.raises(ValueError, match="benchmark='tatoeba': the explorer shows the pooled top k that only the LAReQA"):
        explore.Explorer(sweep, "tatoeba")


def test_runs_records_and_defaults(sweep, explorer):
    assert set(explorer.runs) == {"baseline", "cross", "mono", "old"}
    assert list(explorer.runs)[:2] == ["baseline", "old"]  # untouched models first
    a, b = explorer.default_runs()
    assert a == "baseline" and explorer.runs[b]["params"]["steps"] > 0
    assert [name for _, name in explorer.run_options()] == list(explorer.runs)
    assert explorer.languages == ["de", "en", "zh"]
    assert str(sweep) in explore.sweep_folders(sweep.parent)
    summary = explorer.summary()
    assert summary.loc["baseline", "top ids stored"] and not summary.loc["old", "top ids stored"]
    assert summary.loc["cross", "model for free text"] and not summary.loc["mono", "model for free text"]
    # the run folder records what the bias analysis needs
    metrics = json.loads((sweep / "cross" / "metrics.json").read_text())["benchmarks"]["xquad-r"]
    assert {"accuracy", "low", "high", "chance", "folds", "split"} <= set(metrics["language_probe"])
    assert {"map", "rank_distance", "map_gap", "map_gap_closed", "rank_distance_removed"} <= set(metrics["centred"])
    assert (sweep / "cross" / "projection-lda-xquad-r.csv.gz").is_file()


def test_question_options_filter_by_language_and_text(explorer):
    everything = explorer.question_options()
    assert len(everything) == len(explorer.questions)
    german = explorer.question_options("de")
    assert german and all(label.startswith("[de] ") for label, _ in german)
    word = german[0][0].split()[2]
    found = explorer.question_options("de", word.upper())
    assert german[0][1] in {qid for _, qid in found} and len(found) <= len(german)
    assert explorer.question_options("de", "no question contains this") == []


def test_question_view_lists_the_stored_top_k_with_golds_and_every_gold_rank(explorer):
    pooled = analysis.per_query(explorer.runs["cross"], "xquad-r").query("setting == 'multi'").set_index("query_id")
    for query_id in list(pooled.index[:12]):
        view = explorer.question_view("cross", query_id, k=TOP_K)
        row = pooled.loc[query_id]
        assert [h.rank for h in view.hits] == list(range(1, TOP_K + 1))
        assert [h.candidate_id for h in view.hits] == row[TOP_IDS].split()
        golds = explorer.benchmark.relevant[query_id]
        assert all(h.gold == (h.candidate_id in golds) for h in view.hits)
        assert {g.candidate_id for g in view.golds} == golds and len(view.golds) == row["num_relevant"]
        ranks = sorted(g.rank for g in view.golds)
        assert (ranks[0], ranks[-1]) == (row["rank_first"], row["rank_last"])
        same = [g.rank for g in view.golds if g.lang == view.query_lang]
        assert same == [row["rank_same_lang"]]
        for gold in view.golds:  # a gold in the top k sits at its rank in the list
            if gold.rank <= TOP_K:
                assert view.hits[gold.rank - 1].candidate_id == gold.candidate_id
        assert view.top_languages == pd.Series([h.lang for h in view.hits]).value_counts().to_dict()
    short = explorer.question_view("cross", query_id, k=3)
    assert len(short.hits) == 3 and explorer.question_view("cross", query_id, k=99).k == TOP_K


def test_compare_html_changes_with_the_run_and_the_question(explorer):
    first, second = [qid for _, qid in explorer.question_options("en")[:2]]
    html = explorer.compare_html(["baseline", "cross"], first, 5)
    assert html.count('class="hl-view"') == 2 and "hl-badge" in html and "hl-langbar" in html
    assert "baseline (no fine-tuning)" in html and "cross (0/1/0 per_batch)" in html
    assert "pooled rank of every relevant translation" in html
    assert explorer.compare_html(["baseline", "mono"], first, 5) != html
    assert explorer.compare_html(["baseline", "cross"], second, 5) != html
    assert explorer.compare_html(["baseline", "cross"], first, 2) != html


def test_a_run_recorded_before_the_top_ids_says_so_and_keeps_its_ranks(explorer):
    query_id = explorer.question_options("zh")[0][1]
    view = explorer.question_view("old", query_id)
    assert not view.hits and "recorded before the per-query top-10 ids" in view.note
    assert "same-language gold" in view.note
    assert [g.rank is None for g in view.golds] == [g.lang != "zh" for g in view.golds]  # its own gold's rank only
    assert "hl-note" in explorer.compare_html(["old", "baseline"], query_id)


def test_free_text_search_encodes_once_and_caches_the_candidates(explorer, sweep, monkeypatch):
    query_id, text = next((qid, row.text) for qid, row in explorer.questions.iterrows() if row.lang == "de")
    view = explorer.search("baseline", text, k=TOP_K, progress=False)
    assert [h.rank for h in view.hits] == list(range(1, TOP_K + 1))
    assert all(a.score >= b.score for a, b in zip(view.hits, view.hits[1:]))
    stored = analysis.per_query(explorer.runs["baseline"], "xquad-r").query("setting == 'multi'").set_index(
        "query_id").loc[query_id, TOP_IDS].split()
    # the same model on the same texts: the search finds what the evaluation stored (query batching aside)
    assert len(set(stored) & {h.candidate_id for h in view.hits}) >= TOP_K - 2
    assert {h.candidate_id for h in view.hits if h.gold} <= explorer.benchmark.relevant[query_id]
    path = explorer.embeddings_path("baseline")
    assert path.is_file() and str(path).startswith(str(explore.cache_dir("explore")))
    # a new explorer (a new kernel) reads the cached candidates: only the query is encoded
    again = explore.Explorer(sweep)
    encoded = []
    model = again.model("baseline")
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda texts, role, **kw: encoded.append(role) or original(texts, role, **kw))
    assert [h.candidate_id for h in again.search("baseline", text, progress=False).hits] == [
        h.candidate_id for h in view.hits]
    assert encoded == ["query"]


def test_fine_tuned_runs_search_with_their_model_or_say_how_to_get_one(explorer):
    assert explorer.model_status("cross")[0]
    hits = explorer.search("cross", "Wer hat das Spiel gewonnen?", k=4, progress=False).hits
    assert len(hits) == 4 and explorer.embeddings_path("cross") != explorer.embeddings_path("baseline")
    available, message = explorer.model_status("mono")
    assert not available and "save_model: true" in message and "--export" in message
    view = explorer.search("mono", "Wer hat das Spiel gewonnen?")
    assert not view.hits and "save_model: true" in view.note
    with pytest.raises(explore.ModelUnavailable, match="save_model"):
        explorer.model("mono")
    html = explorer.search_html(["baseline", "mono"], "Wer hat das Spiel gewonnen?", k=3, progress=False)
    assert html.count('class="hl-view"') == 2 and "hl-note" in html
    assert "type a query" in explorer.search_html(["baseline"], "  ")


@pytest.mark.slow
def test_the_notebook_runs_headless_on_the_sweep(sweep, tmp_path, monkeypatch):
    """05_explore.ipynb under papermill (as nbval and the sweep run it): widgets built, callbacks run, no stderr."""
    import papermill

    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path / "cache"))
    executed = tmp_path / "05_explore.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "05_explore.ipynb"), str(executed), cwd=str(ROOT),
                               parameters={"sweep_dir": str(sweep), "run_b": "mono", "k": 4,
                                           "example_query": "Wer hat das Spiel gewonnen?"},
                               kernel_name="python3", progress_bar=False)
    notebook = nbformat.read(executed, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    static = notebook.cells[-1].outputs[0]["data"]["text/html"]
    assert static.count('class="hl-view"') == 2 and "mono (1/0/0 per_batch)" in static
    state = json.dumps(notebook.metadata["widgets"])
    assert "hl-results" in state and "save_model: true" in state  # the free-text pane explains mono's missing model


def test_id_columns_are_read_as_text_whatever_they_hold(tmp_path):
    """A table whose gold ranks all look like numbers ("3") or whose id lists are missing in the first rows is
    read with text columns, as in the 600-group tables where pandas guessed a mixed type per chunk."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"query_id": f"q{i}", "setting": "multi", "map": 0.5, TOP_IDS: float("nan") if i < 3 else "de:1 en:2",
             GOLD_RANKS: "3"} for i in range(6)]
    pd.DataFrame(rows).to_csv(run / "per_query-xquad-r.csv.gz", index=False)
    table = analysis.per_query({"path": str(run)}, "xquad-r")
    assert table[GOLD_RANKS].tolist() == ["3"] * 6
    assert table[TOP_IDS].isna().sum() == 3 and table[TOP_IDS].iloc[3] == "de:1 en:2"
