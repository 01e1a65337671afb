"""Looking inside a sweep one question at a time: what ``notebooks/05_explore.ipynb`` shows, as plain data and HTML.

    explorer = Explorer("outputs/demo")                        # the sweep's finished runs and their benchmark
    explorer.question_options(lang="de", text="Super Bowl")   # [(label, query id), ...] for a picker
    view = explorer.question_view("cross-s0", query_id, k=10)  # the pooled top k, golds, ranks (plain data)
    html = explorer.compare_html(["baseline", "cross-s0"], query_id, k=10)    # side by side, as HTML
    hits = explorer.search("baseline", "Wer gewann den Super Bowl 50?", k=10)  # free text: encode + FAISS

A benchmark question needs no model: each run's per-query table stores the ids of every query's pooled top 10
(``metrics.TOP_IDS``) and the pooled rank of each relevant candidate (``metrics.GOLD_RANKS``), so the committed
outputs suffice. A free-text query is encoded with the run's model and searched with FAISS (``search.top_k``)
over that run's candidate embeddings, computed once per run and cached outside git
(``cache.cache_dir("explore", ...)``). The untouched baseline (``steps: 0``) always has a model (it is
``params["model"]``); a fine-tuned run has one when its folder holds ``model/`` (``save_model: true``).
"""

from __future__ import annotations

import hashlib
import html
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import build_folder, cache_dir
from ..data.pinned import BENCHMARKS
from ..evaluation.metrics import GOLD_RANKS, TOP_IDS, TOP_K
from ..evaluation.tasks import get_task
from . import results as analysis

MODEL_SETTINGS = ("pooling", "query_prefix", "passage_prefix", "query_max_length", "passage_max_length")
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
            "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173"]


class ModelUnavailable(RuntimeError):
    """A run has no model to encode free text with; the message says how to get one."""


def sweep_folders(root: str | Path = "outputs") -> list[str]:
    """Folders under ``root`` (itself included, one level down) that hold finished runs (``*/metrics.json``)."""
    root = Path(root)
    candidates = [root, *sorted(p for p in root.glob("*") if p.is_dir())] if root.is_dir() else []
    return [str(p) for p in candidates if any(p.glob("*/metrics.json"))]


def language_colours(languages) -> dict[str, str]:
    """A fixed colour per language (sorted order), the same in every view."""
    return {lang: _PALETTE[i % len(_PALETTE)] for i, lang in enumerate(sorted(languages))}


@dataclass
class Hit:
    rank: int
    candidate_id: str
    lang: str
    text: str
    gold: bool
    score: float | None = None


@dataclass
class Gold:
    lang: str
    candidate_id: str
    rank: int | None  # pooled rank; None where the run did not record it
    text: str


@dataclass
class View:
    """One run's answer to one question (or to a free-text query): plain data, rendered by ``view_html``."""

    run: str
    label: str
    query: str
    query_lang: str | None
    k: int
    hits: list[Hit] = field(default_factory=list)
    golds: list[Gold] = field(default_factory=list)
    scores: dict = field(default_factory=dict)  # this query's pooled AP, rank distance, ... in this run
    note: str | None = None  # why something is missing (old records, no model)

    @property
    def top_languages(self) -> Counter:
        return Counter(hit.lang for hit in self.hits)


class Explorer:
    """A sweep folder's finished runs on one benchmark, with that benchmark's texts.

    ``benchmark``: which benchmark (default: the first one every run evaluated). The benchmark is loaded with
    the runs' own evaluation settings (``eval_languages``, ``max_groups``), so candidate ids match.
    """

    def __init__(self, sweep_dir: str | Path, benchmark: str | None = None, device: str = "auto"):
        self.sweep_dir = Path(sweep_dir)
        records = analysis.load_runs(self.sweep_dir)
        # the LAReQA tasks: their per-query tables hold each query's pooled top k, which the views show
        shared = [name for name in records[0]["benchmarks"]
                  if name in BENCHMARKS and all(name in r["benchmarks"] for r in records)]
        if benchmark is None:
            if not shared:
                raise ValueError(f"the runs of {self.sweep_dir} share no LAReQA benchmark ({sorted(BENCHMARKS)})")
            benchmark = shared[0]
        if benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark={benchmark!r}: the explorer shows the pooled top k that only the LAReQA tasks "
                             f"record; choose one of {sorted(BENCHMARKS)}")
        self.benchmark_name = benchmark
        records = [r for r in records if benchmark in r["benchmarks"]]
        if not records:
            raise ValueError(f"no run of {self.sweep_dir} evaluated {benchmark!r}")
        # untouched models first (the natural reference), then the sweep's order
        records.sort(key=lambda r: r["params"]["steps"] != 0)
        self.runs = {r["run_name"]: r for r in records}
        first = records[0]["params"]
        languages = first["eval_languages"] and get_task(benchmark).languages(first)  # those this benchmark kept
        self.eval_settings = {"languages": languages, "max_groups": first["max_groups"]}
        self.notes = [f"{name} was evaluated with other settings ({r['params']['eval_languages']}, max_groups "
                      f"{r['params']['max_groups']}): its candidates may not match" for name, r in self.runs.items()
                      if (r["params"]["eval_languages"], r["params"]["max_groups"]) != (first["eval_languages"],
                                                                                         first["max_groups"])]
        self.device = device
        self._bench = None
        self._models: dict = {}
        self._embeddings: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ the sweep and its benchmark

    @property
    def benchmark(self):
        if self._bench is None:
            from ..data.benchmarks import load_benchmark

            self._bench = load_benchmark(self.benchmark_name, **self.eval_settings)
        return self._bench

    @property
    def languages(self) -> list[str]:
        return list(self.benchmark.languages)

    @property
    def colours(self) -> dict[str, str]:
        return language_colours(self.languages)

    @property
    def questions(self) -> pd.DataFrame:
        """The benchmark's queries: id (index), group, lang, text."""
        if not hasattr(self, "_questions"):
            self._questions = self.benchmark.queries.to_pandas().set_index("id")
        return self._questions

    @property
    def candidates(self) -> pd.DataFrame:
        """The benchmark's candidates: id (index), lang, text."""
        if not hasattr(self, "_candidates"):
            self._candidates = self.benchmark.candidates.select_columns(["id", "lang", "text"]).to_pandas().set_index("id")
        return self._candidates

    def run_label(self, run: str) -> str:
        return f"{run} ({analysis.run_label(self.runs[run]['params'])})"

    def run_options(self) -> list[tuple[str, str]]:
        """(label, run name) for a picker: untouched models first."""
        return [(self.run_label(name), name) for name in self.runs]

    def default_runs(self) -> list[str]:
        """The untouched model (else the first run) and the fine-tuned run with the highest pooled mAP."""
        names = list(self.runs)
        trained = [n for n in names if self.runs[n]["params"]["steps"] > 0]
        best = max(trained, key=lambda n: self.runs[n]["benchmarks"][self.benchmark_name]["map"]["multi"] or 0,
                   default=None)
        first = names[0]
        return [first, best or (names[1] if len(names) > 1 else first)]

    def question_options(self, lang: str | None = None, text: str | None = None, limit: int = 300) -> list[tuple[str, str]]:
        """(label, query id) of the questions in ``lang`` (None: all) whose text contains ``text`` (any case)."""
        table = self.questions
        if lang:
            table = table[table["lang"] == lang]
        if text and text.strip():
            table = table[table["text"].str.contains(text.strip(), case=False, regex=False)]
        return [(f"[{row.lang}] {row.text[:120]}", qid) for qid, row in table.head(limit).iterrows()]

    def has_top_ids(self, run: str) -> bool:
        return TOP_IDS in self._pooled(run)

    def _pooled(self, run: str) -> pd.DataFrame:
        table = analysis.per_query(self.runs[run], self.benchmark_name)
        return table[table["setting"] == "multi"].set_index("query_id")

    # ------------------------------------------------------------------ a benchmark question

    def question_view(self, run: str, query_id: str, k: int = TOP_K) -> View:
        """The run's pooled top ``k`` for a benchmark question, with the golds marked and every gold's rank."""
        k = max(1, min(int(k), TOP_K))
        query = self.questions.loc[query_id]
        golds_ids = sorted(self.benchmark.relevant.get(query_id, ()))
        view = View(run=run, label=self.run_label(run), query=query["text"], query_lang=query["lang"], k=k)
        pooled = self._pooled(run)
        if query_id not in pooled.index:
            view.note = "this question has no pooled record in this run"
            return view
        row = pooled.loc[query_id]
        view.scores = {name: row[column] for name, column in (("pooled AP", "ap"), ("rank distance", "rank_distance"),
                                                               ("AP centred", "ap_centred")) if column in row}
        ranks = _parse_gold_ranks(row.get(GOLD_RANKS))
        if not ranks and not pd.isna(row.get("rank_same_lang")):  # older records: the same-language gold's rank only
            ranks = [(query["lang"], int(row["rank_same_lang"]))]
        by_lang: dict[str, list[int]] = {}
        for lang, rank in ranks:
            by_lang.setdefault(lang, []).append(rank)
        for cid in sorted(golds_ids, key=lambda c: self.candidates.index.get_loc(c)):
            lang = self.candidates.at[cid, "lang"]
            rank = by_lang[lang].pop(0) if by_lang.get(lang) else None
            view.golds.append(Gold(lang, cid, rank, self.candidates.at[cid, "text"]))
        view.golds.sort(key=lambda g: (g.rank is None, g.rank or 0))
        top = row.get(TOP_IDS)
        if not isinstance(top, str):
            view.note = (f"{run} was recorded before the per-query top-{TOP_K} ids were stored: rerun it (or the "
                         f"sweep) to see its results list. Recorded ranks: same-language gold "
                         f"{_int(row.get('rank_same_lang'))}, best other-language gold {_int(row.get('rank_other_best'))}, "
                         f"first / last relevant {_int(row.get('rank_first'))} / {_int(row.get('rank_last'))}.")
            return view
        gold_set = set(golds_ids)
        for rank, cid in enumerate(top.split()[:k], start=1):
            view.hits.append(Hit(rank, cid, self.candidates.at[cid, "lang"], self.candidates.at[cid, "text"],
                                 cid in gold_set))
        return view

    def compare_html(self, runs: list[str], query_id: str, k: int = TOP_K) -> str:
        """The question's views in ``runs`` side by side (what the notebook's results pane shows)."""
        return self.side_by_side([self.question_view(run, query_id, k) for run in runs])

    # ------------------------------------------------------------------ free text

    def model_status(self, run: str) -> tuple[bool, str]:
        """Whether ``run`` has a model to encode free text with, and a sentence saying which (or how to get one)."""
        params, folder = self.runs[run]["params"], Path(self.runs[run]["path"])
        if params["steps"] == 0:
            return True, f"the untouched model {params['model']!r}"
        if (folder / "model" / "hybridlib.json").is_file():
            return True, f"the fine-tuned model in {folder / 'model'}"
        sweep_file = _sweep_file(self.sweep_dir)
        return False, (
            f"{run} kept no model (it ran with save_model: false, so {folder}/model/ does not exist). To search "
            f"with it, retrain that point with save_model: true: `python -m hybridlib.sweep {sweep_file} --export "
            f"/tmp/points --only {run}`, set `save_model: true` in /tmp/points/{run}.yaml, then `python -m "
            f"hybridlib.experiment /tmp/points/{run}.yaml` (same parameters: it refits {folder} with model/).")

    def model(self, run: str):
        """The run's bi-encoder (loaded once); ``ModelUnavailable`` when it kept none."""
        if run not in self._models:
            available, message = self.model_status(run)
            if not available:
                raise ModelUnavailable(message)
            from ..models.bi_encoder import load_model
            from ..models.build import build_model, pick_device

            params, device = self.runs[run]["params"], pick_device(self.device)
            if params["steps"] == 0:
                self._models[run] = build_model(params, device).eval()
            else:
                self._models[run] = load_model(Path(self.runs[run]["path"]) / "model").to(device).eval()
        return self._models[run]

    def embeddings_path(self, run: str) -> Path:
        """Where the run's candidate embeddings are cached: keyed by the model, its settings and the candidates."""
        params, folder = self.runs[run]["params"], Path(self.runs[run]["path"])
        if params["steps"] == 0:
            identity = {"model": params["model"], "seed": params["seed"]}
        else:
            identity = {"files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                  for p in sorted((folder / "model").iterdir()) if p.is_file()]}
        ids = hashlib.sha256("\n".join(self.candidates.index).encode()).hexdigest()
        key = json.dumps({"model": identity, "settings": {k: params[k] for k in MODEL_SETTINGS},
                          "benchmark": self.benchmark_name, "candidates": ids}, sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache_dir("explore", f"{run}-{digest}") / "candidates.npy"

    def candidate_embeddings(self, run: str, progress: bool = True) -> np.ndarray:
        """The run's embeddings of every candidate: from the cache, else encoded once and cached."""
        if run in self._embeddings:
            return self._embeddings[run]
        path = self.embeddings_path(run)
        if not path.is_file():
            model = self.model(run)
            embeddings = model.encode(list(self.candidates["text"]), "passage",
                                      batch_size=self.runs[run]["params"]["eval_batch_size"], show_progress=progress)
            with build_folder(path.parent, marker=path.name) as tmp:
                np.save(tmp / path.name, np.asarray(embeddings, dtype=np.float32))
        self._embeddings[run] = np.load(path)
        return self._embeddings[run]

    def search(self, run: str, text: str, k: int = TOP_K, progress: bool = True) -> View:
        """Encode ``text`` with the run's model and return its pooled top ``k`` over the run's candidates.

        Candidates that are golds of a benchmark question with exactly this text are marked.
        """
        from ..evaluation.search import top_k

        k = max(1, int(k))
        view = View(run=run, label=self.run_label(run), query=text, query_lang=None, k=k)
        if not text or not text.strip():
            view.note = "type a query"
            return view
        available, message = self.model_status(run)
        if not available:
            view.note = message
            return view
        candidates = self.candidate_embeddings(run, progress=progress)
        query = self.model(run).encode([text.strip()], "query", batch_size=1, show_progress=False)
        scores, rows = top_k(query, candidates, k)
        same = self.questions.index[self.questions["text"] == text.strip()]
        golds = set().union(*(self.benchmark.relevant.get(q, set()) for q in same)) if len(same) else set()
        ids = self.candidates.index
        for rank, (row, score) in enumerate(zip(rows[0], scores[0]), start=1):
            cid = ids[row]
            view.hits.append(Hit(rank, cid, self.candidates.at[cid, "lang"], self.candidates.at[cid, "text"],
                                 cid in golds, float(score)))
        return view

    def search_html(self, runs: list[str], text: str, k: int = TOP_K, progress: bool = True) -> str:
        """The free-text query's top ``k`` in ``runs`` side by side."""
        return self.side_by_side([self.search(run, text, k, progress=progress) for run in runs])

    # ------------------------------------------------------------------ HTML

    def badge(self, lang: str) -> str:
        colour = self.colours.get(lang, "#999999")
        return (f'<span class="hl-badge" style="background:{colour};color:white;border-radius:3px;'
                f'padding:0 4px;font-family:monospace;font-size:90%">{html.escape(lang)}</span>')

    def language_bar(self, view: View) -> str:
        """A bar of the languages in the top k, one segment per language, widths proportional to counts."""
        counts = view.top_languages
        if not counts:
            return ""
        segments = "".join(
            f'<div title="{html.escape(lang)}: {n}" style="flex:{n};background:{self.colours.get(lang, "#999")};'
            f'color:white;font-size:75%;text-align:center;overflow:hidden">{html.escape(lang)} {n}</div>'
            for lang, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
        return (f'<div class="hl-langbar" style="display:flex;height:16px;width:100%;margin:4px 0">{segments}</div>'
                f'<div style="font-size:80%;color:#555">languages in the top {len(view.hits)}</div>')

    def view_html(self, view: View) -> str:
        """One run's view: the query, its scores, the language bar, the ranked hits, every gold's rank."""
        head = (f'<div style="font-weight:bold">{html.escape(view.label)}</div>'
                f'<div>{self.badge(view.query_lang) + " " if view.query_lang else ""}{html.escape(view.query)}</div>')
        scores = " · ".join(f"{name} {value:.3g}" for name, value in view.scores.items()
                            if value is not None and not pd.isna(value))
        parts = [head, f'<div style="font-size:85%;color:#555">{scores}</div>' if scores else ""]
        if view.note:
            parts.append(f'<div class="hl-note" style="background:#fff3cd;padding:4px;margin:4px 0">'
                         f'{html.escape(view.note)}</div>')
        if view.hits:
            parts.append(self.language_bar(view))
            rows = "".join(
                f'<tr style="{"background:#e6f4ea" if hit.gold else ""}"><td style="text-align:right">{hit.rank}</td>'
                f'<td>{self.badge(hit.lang)}</td><td>{"&#10003; gold" if hit.gold else ""}</td>'
                f'<td style="text-align:left">{html.escape(hit.text)}</td>'
                f'{f"<td>{hit.score:.3f}</td>" if hit.score is not None else ""}</tr>'
                for hit in view.hits)
            parts.append(f'<table class="hl-hits" style="width:100%;font-size:90%">{rows}</table>')
        if view.golds:
            golds = " ".join(
                f'<span title="{html.escape(g.text)}" style="white-space:nowrap;margin-right:6px">{self.badge(g.lang)} '
                f'{"#" + str(g.rank) if g.rank is not None else "?"}{" &#10003;" if g.rank is not None and g.rank <= view.k else ""}'
                f'</span>' for g in view.golds)
            parts.append(f'<div class="hl-golds" style="margin-top:6px"><b>pooled rank of every relevant translation</b> '
                         f'(&#10003;: in the top {view.k}): {golds}</div>')
        return (f'<div class="hl-view" style="flex:1;min-width:320px;border:1px solid #ddd;padding:6px;margin:2px;'
                f'line-height:1.35">'
                f'{"".join(parts)}</div>')

    def side_by_side(self, views: list[View]) -> str:
        return ('<div class="hl-compare" style="display:flex;gap:8px;align-items:flex-start">'
                + "".join(self.view_html(v) for v in views) + "</div>")

    def summary(self) -> pd.DataFrame:
        """One row per run: label, pooled mAP, whether top ids and a model are available."""
        rows = []
        for name, run in self.runs.items():
            result = run["benchmarks"][self.benchmark_name]
            rows.append({"run": name, "label": analysis.run_label(run["params"]), "map_multi": result["map"]["multi"],
                         "rank_distance": result["rank_distance"], "top ids stored": self.has_top_ids(name),
                         "model for free text": self.model_status(name)[0]})
        return pd.DataFrame(rows).set_index("run")


def _parse_gold_ranks(text) -> list[tuple[str, int]]:
    if not isinstance(text, str):
        return []
    pairs = []
    for token in text.split():
        lang, _, rank = token.rpartition(":")
        pairs.append((lang, int(float(rank))))
    return pairs


def _int(value) -> str:
    return "?" if value is None or pd.isna(value) else str(int(value))


def _sweep_file(sweep_dir: Path) -> str:
    """The sweep file that last ran into ``sweep_dir`` (from its sweep.json), else a guess."""
    try:
        return json.loads((sweep_dir / "sweep.json").read_text())["invocations"][-1]["file"]
    except (OSError, ValueError, KeyError, IndexError):
        return f"params/{sweep_dir.name}.yaml"
