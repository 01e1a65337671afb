"""Streamed pair sources: mMARCO (on a tiny local copy with the real layout) and ready pair files. No network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import warnings
from collections import Counter
from pathlib import Path

import datasets
import pandas as pd
import pytest

from hybridlib.data.benchmarks import PAIR_COLUMNS
from hybridlib.data.pair_sources import (
    MMARCO_REVISION, mmarco_files, mmarco_pairs, pair_source_report, read_qrels, stream_pair_files,
    stream_parallel_pairs)
from hybridlib.data.sampler import HybridBatchSampler

FIXTURE = Path(__file__).parent / "fixtures" / "mmarco"
TRIPLES = FIXTURE / "data" / "triples.train.ids.small.tsv"
MISSING_DE_QUERY = "78636"  # in the triples, absent from german_queries.train.tsv
MISSING_ES_PASSAGE = "890283"  # its positive passage is absent from spanish_collection.tsv


def triples_qids() -> list[str]:
    """Distinct qids of the fixture's triples file, in file order."""
    return list(dict.fromkeys(line.split("\t")[0] for line in TRIPLES.read_text().splitlines()))


@pytest.fixture(scope="module")
def mmarco():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = mmarco_pairs(("en", "german", "es"), base_url=FIXTURE, progress=False)
    return pairs, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def rows_of(pairs, group):
    return {row["lang"]: row for row in pairs.filter(lambda r: r["group"] == group)}


def test_fixture_is_tiny_and_has_the_real_layout():
    names = sorted(str(p.relative_to(FIXTURE)) for p in FIXTURE.rglob("*") if p.is_file())
    for lang in ("english", "german", "spanish"):
        assert f"data/google/collections/{lang}_collection.tsv" in names
        assert f"data/google/queries/train/{lang}_queries.train.tsv" in names
    assert "data/triples.train.ids.small.tsv" in names
    assert sum((FIXTURE / n).stat().st_size for n in names) < 50_000


def test_columns_dtypes_and_size(mmarco):
    pairs, _ = mmarco
    assert isinstance(pairs, datasets.Dataset)
    assert pairs.column_names == list(PAIR_COLUMNS)
    assert all(feature == datasets.Value("string") for feature in pairs.features.values())
    assert len(pairs) == 28 * 3  # 30 qids in the triples, 2 incomplete
    assert Counter(pairs["lang"]) == {"en": 28, "de": 28, "es": 28}  # ISO codes, not mMARCO names
    assert set(Counter(pairs["group"]).values()) == {3}


def test_groups_align_translations_across_languages(mmarco):
    pairs, _ = mmarco
    australia = rows_of(pairs, "679128")
    assert australia["en"]["query"] == "what is the capital of australia"
    assert australia["de"]["query"] == "was ist die hauptstadt von australien"
    assert australia["es"]["query"] == "cuál es la capital de australia"
    assert australia["de"]["passage"].startswith("Canberra ist die Hauptstadt Australiens")
    assert australia["es"]["passage"].startswith("Canberra es la capital de Australia, elegida")
    ocean = rows_of(pairs, "450256")
    assert ocean["de"]["query"] == "was ist der größte ozean"
    assert ocean["es"]["passage"].startswith("El océano Pacífico es el más grande")
    # groups in triples order, languages in the order asked
    expected = [q for q in triples_qids() if q not in (MISSING_DE_QUERY, MISSING_ES_PASSAGE)]
    assert list(dict.fromkeys(pairs["group"])) == expected
    assert pairs["lang"][:3] == ["en", "de", "es"]


def test_quotes_and_non_ascii_are_kept_verbatim(mmarco):
    pairs, _ = mmarco
    austen = rows_of(pairs, "828006")
    assert austen["en"]["query"] == 'who wrote "pride and prejudice"'
    assert austen["en"]["passage"] == '"Pride and Prejudice" is a novel by Jane Austen, first published in 1813.'
    assert austen["es"]["query"] == 'quién escribió "orgullo y prejuicio"'
    vinyl = rows_of(pairs, "101265")  # inch marks: 12" and 7"
    assert vinyl["en"]["passage"].startswith('A 12" LP usually plays at 33 1/3')
    assert vinyl["de"]["passage"].startswith('Eine 12"-LP läuft') and vinyl["es"]["passage"].count('"') == 2
    assert any("¥" in p for p in pairs["passage"]) and any("ö" in q for q in pairs["query"])


def test_unbalanced_leading_quote_and_na_like_texts(tmp_path):
    # with CSV quoting a leading '"' would swallow the following lines; with NA parsing "null"/"NA" would vanish
    (tmp_path / "q.tsv").write_text('1\t"carpe diem meaning\n2\tNA\n3\twhat is 5" in cm\n', encoding="utf-8")
    (tmp_path / "c.tsv").write_text('10\t"Carpe diem, wrote Horace.\n20\tnull\n30\tFive inches are 12.7 cm.\n',
                                    encoding="utf-8")
    (tmp_path / "qrels.tsv").write_text("1\t10\n2\t20\n3\t30\n")
    pairs = stream_parallel_pairs({"en": str(tmp_path / "q.tsv")}, {"en": str(tmp_path / "c.tsv")},
                                  str(tmp_path / "qrels.tsv"), progress=False)
    assert pairs["query"] == ['"carpe diem meaning', "NA", 'what is 5" in cm']
    assert pairs["passage"] == ['"Carpe diem, wrote Horace.', "null", "Five inches are 12.7 cm."]


def test_incomplete_groups_are_dropped_and_reported(mmarco):
    pairs, caught = mmarco
    assert not {MISSING_DE_QUERY, MISSING_ES_PASSAGE} & set(pairs["group"])
    (message,) = caught
    assert "2 of 30 groups dropped" in message and MISSING_DE_QUERY in message and MISSING_ES_PASSAGE in message
    report = pair_source_report(pairs)
    assert report["groups_read"] == 30 and report["groups_kept"] == 28 and report["groups_dropped"] == 2
    assert report["dropped"] == {"de": {"missing_query": 1}, "es": {"missing_passage": 1}}
    assert report["dropped_examples"]["de"]["missing_query"] == [MISSING_DE_QUERY]
    # only the languages asked for decide: english + spanish keeps the group german lacks
    with pytest.warns(UserWarning, match="1 of 30 groups dropped"):
        en_es = mmarco_pairs(["en", "es"], base_url=FIXTURE, progress=False)
    assert MISSING_DE_QUERY in en_es["group"] and MISSING_ES_PASSAGE not in en_es["group"]


def test_max_groups_and_language_subset(recwarn):
    pairs = mmarco_pairs(["english", "de"], max_groups=5, base_url=FIXTURE, progress=False)
    assert sorted(set(pairs["lang"])) == ["de", "en"]
    assert list(dict.fromkeys(pairs["group"])) == triples_qids()[:5]
    report = pair_source_report(pairs)
    assert report["groups_read"] == 5 and report["qrels"]["lines_read"] < len(TRIPLES.read_text().splitlines())
    assert not recwarn.list  # none of the first five is incomplete


def test_scan_stops_once_every_wanted_id_is_found():
    # the first three qids of the triples have the three lowest passage ids: 4-row chunks reach them in 2 chunks
    pairs = mmarco_pairs(["en", "de"], max_groups=3, base_url=FIXTURE, progress=False, chunk_rows=4)
    scans = pair_source_report(pairs)["scans"]
    for lang in ("en", "de"):
        assert scans[lang]["passages"]["rows_read"] == 8  # of 60
        assert scans[lang]["passages"]["all_found"] and scans[lang]["queries"]["all_found"]
        assert scans[lang]["queries"]["rows_read"] < 29


def test_scan_never_reads_past_the_needed_rows(tmp_path):
    bad_tail = b"999\ttoo\tmany\tfields\n\xff\xfe not utf-8\n"
    (tmp_path / "q.tsv").write_bytes("1\tfirst query\n2\tsecond query\n".encode() + bad_tail)
    (tmp_path / "c.tsv").write_bytes("10\tfirst passage\n20\tsecond passage\n".encode() + bad_tail)
    (tmp_path / "qrels.tsv").write_text("1\t10\t20\n2\t20\t10\n1\t20\t10\n")
    args = ({"en": str(tmp_path / "q.tsv")}, {"en": str(tmp_path / "c.tsv")}, str(tmp_path / "qrels.tsv"))
    pairs = stream_parallel_pairs(*args, chunk_rows=2, progress=False)
    assert pairs["passage"] == ["first passage", "second passage"]
    with pytest.raises(pd.errors.ParserError):  # the tail is malformed indeed: a scan that reaches it fails
        stream_parallel_pairs(*args, chunk_rows=3, progress=False)


def test_qrels_formats(tmp_path):
    (tmp_path / "pairs.tsv").write_text("7\t70\n8\t80\n7\t71\n")
    (tmp_path / "triples.tsv").write_text("7\t70\t99\n7\t71\t98\n8\t80\t97\n9\t90\t96\n")
    (tmp_path / "trec.tsv").write_text("7 0 70 0\n7 0 71 1\n8\t0\t80\t1\n")
    assert read_qrels(tmp_path / "pairs.tsv") == ({"7": ("70", None), "8": ("80", None)}, 3)
    # the triples keep the negative of each qid's first line
    assert read_qrels(tmp_path / "triples.tsv", max_groups=2) == ({"7": ("70", "99"), "8": ("80", "97")}, 3)
    assert read_qrels(tmp_path / "trec.tsv")[0] == {"7": ("71", None), "8": ("80", None)}  # relevance 0: no positive
    (tmp_path / "bad.tsv").write_text("1 2 3 4 5\n")
    with pytest.raises(ValueError, match="5 fields"):
        read_qrels(tmp_path / "bad.tsv")


def test_dev_split_reads_trec_qrels():
    pairs = mmarco_pairs(["en", "es"], split="dev", base_url=FIXTURE, progress=False)
    assert len(pairs) == 6
    assert pairs.filter(lambda r: r["lang"] == "es")["query"][1] == "quién inventó la penicilina"


def test_remote_paths_and_argument_errors():
    files = mmarco_files(["de", "english"])
    root = f"hf://datasets/unicamp-dl/mmarco@{MMARCO_REVISION}/data"
    assert files["queries"] == {"de": f"{root}/google/queries/train/german_queries.train.tsv",
                                "en": f"{root}/google/queries/train/english_queries.train.tsv"}
    assert files["passages"]["de"] == f"{root}/google/collections/german_collection.tsv"
    assert files["qrels"] == f"{root}/triples.train.ids.small.tsv"
    https = "https://huggingface.co/datasets/unicamp-dl/mmarco/resolve/main/"
    assert mmarco_files("ja", split="dev", base_url=https)["queries"]["ja"] == (
        https + "data/google/queries/dev/japanese_queries.dev.small.tsv")
    with pytest.raises(ValueError, match="no language 'xx'"):
        mmarco_files(["en", "xx"])
    with pytest.raises(ValueError, match="twice"):
        mmarco_files(["en", "english"])
    with pytest.raises(ValueError, match="split"):
        mmarco_files(["en"], split="test")
    with pytest.raises(ValueError, match="max_groups"):
        mmarco_pairs(["en"], max_groups=0, base_url=FIXTURE)
    with pytest.raises(ValueError, match=r"no passages file for languages \['de'\]"):
        stream_parallel_pairs({"en": "q", "de": "q"}, {"en": "c"}, str(TRIPLES))


@pytest.mark.parametrize("mix", ["within_batch", "per_batch"])
def test_feeds_the_hybrid_batch_sampler(mmarco, mix):
    pairs, _ = mmarco
    table = {(g, l): (q, p) for g, l, q, p in zip(pairs["group"], pairs["lang"], pairs["query"], pairs["passage"])}
    sampler = HybridBatchSampler(pairs, batch_size=8, ratios={"mono": 0.4, "cross": 0.3, "multi": 0.3}, mix=mix,
                                 seed=0)
    kinds = Counter()
    for _ in range(30):
        batch = next(sampler)
        assert len(batch) == 8 and len(set(batch.groups)) == 8
        for kind, g, ql, pl, q, p in zip(batch.kinds, batch.groups, batch.query_langs, batch.passage_langs,
                                         batch.queries, batch.passages):
            kinds[kind] += 1
            assert (ql != pl) if kind == "cross" else (ql == pl)
            assert table[(g, ql)][0] == q and table[(g, pl)][1] == p
        if mix == "within_batch":
            assert Counter(batch.kinds) == {"mono": 3, "cross": 3, "multi": 2}
            assert len({l for k, l in zip(batch.kinds, batch.query_langs) if k == "mono"}) == 1
    assert set(kinds) == {"mono", "cross", "multi"}


def test_stream_pair_files_jsonl_and_parquet(tmp_path):
    frame = pd.DataFrame({"group": [1, 1, 2, 2], "lang": ["en", "de", "en", "de"],
                          "query": ['a "quoted" query', "eine Frage", "q2", "F2"],
                          "passage": ["p1", "Straße", "p2", "P2"], "source": ["x"] * 4})
    frame.to_json(tmp_path / "part-0.jsonl", orient="records", lines=True, force_ascii=False)
    frame.assign(group=[3, 3, 4, 4]).to_parquet(tmp_path / "part-1.parquet")
    pairs = stream_pair_files(str(tmp_path / "part-*"))
    assert pairs.column_names == list(PAIR_COLUMNS) and len(pairs) == 8
    assert pairs["group"] == ["1", "1", "2", "2", "3", "3", "4", "4"]
    assert pairs["query"][0] == 'a "quoted" query' and pairs["passage"][1] == "Straße"
    capped = stream_pair_files([tmp_path / "part-1.parquet", tmp_path / "part-0.jsonl"], max_rows=5)
    assert capped["group"] == ["3", "3", "4", "4", "1"]
    assert pair_source_report(capped)["files"] == {str(tmp_path / "part-1.parquet"): 4,
                                                   str(tmp_path / "part-0.jsonl"): 1}
    assert len(stream_pair_files(tmp_path)) == 8  # a folder: every pair file in it
    HybridBatchSampler(pairs, batch_size=2, ratios={"cross": 1.0})


def test_stream_pair_files_errors(tmp_path):
    frame = pd.DataFrame({"group": ["1"], "lang": ["en"], "query": ["q"], "passage": ["p"]})
    frame.drop(columns=["passage"]).to_json(tmp_path / "noprose.jsonl", orient="records", lines=True)
    frame.drop(columns=["lang", "query"]).to_parquet(tmp_path / "nolang.parquet")
    with pytest.raises(ValueError, match=r"noprose\.jsonl lacks columns \['passage'\]"):
        stream_pair_files(tmp_path / "noprose.jsonl")
    with pytest.raises(ValueError, match=r"nolang\.parquet lacks columns \['lang', 'query'\]"):
        stream_pair_files(tmp_path / "nolang.parquet")
    (tmp_path / "pairs.csv").write_text("group,lang,query,passage\n1,en,q,p\n")
    with pytest.raises(ValueError, match="unsupported"):
        stream_pair_files(tmp_path / "pairs.csv")
    with pytest.raises(FileNotFoundError):
        stream_pair_files(tmp_path / "nothing-*.parquet")
    with pytest.raises(ValueError, match="max_rows"):
        stream_pair_files(tmp_path / "nolang.parquet", max_rows=0)


def test_run_parameters_train_on_mmarco_once_streamed_then_cached(tmp_path, monkeypatch):
    """train_source: mmarco in a run: the pair table is streamed (from a mirror with the hub's layout),
    cached as parquet, and read from the cache by the next run without streaming again."""
    from hybridlib.runs import experiment
    from hybridlib.data import pair_sources
    from hybridlib.runs.config import ParameterError, resolve_params

    monkeypatch.setenv("HYBRIDLIB_MMARCO_URL", str(FIXTURE))
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path))
    params = resolve_params({"train_source": "mmarco", "train_languages": ["de", "en", "es"],
                             "train_max_groups": 12, "batch_size": 4}, apply_env=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's incomplete groups are reported; tested above
        first = experiment.training_pairs(params)
    assert set(first["lang"]) == {"de", "en", "es"} and len(set(first["group"])) <= 12
    assert list((tmp_path / "pairs").glob("mmarco-*.parquet"))

    def no_streaming(*args, **kwargs):
        raise AssertionError("streamed again instead of reading the cache")

    monkeypatch.setattr(pair_sources, "mmarco_pairs", no_streaming)
    again = experiment.training_pairs(params)
    assert again.to_pandas().equals(first.to_pandas())
    batch = experiment.make_sampler(params, again).next_batch()
    assert len(batch) == 4 and len(set(batch.groups)) == 4
    with pytest.raises(ParameterError, match="not in mMARCO"):
        resolve_params({"train_source": "mmarco", "train_languages": ["el"]}, apply_env=False)


# ---------------------------------------------------------------------- triples: the hard negatives


def test_mmarco_triples_keep_the_negative_in_each_language():
    pairs = mmarco_pairs(["en", "de"], max_groups=6, base_url=FIXTURE, progress=False, negatives=True)
    assert pairs.column_names == [*PAIR_COLUMNS, "negative", "passage_id", "negative_id"]
    triples = {}
    for line in TRIPLES.read_text().splitlines():
        qid, positive, negative = line.split("\t")
        triples.setdefault(qid, (positive, negative))
    collections = {lang: dict(line.split("\t", 1) for line in (FIXTURE / f"data/google/collections/{name}_collection.tsv")
                              .read_text(encoding="utf-8").splitlines()) for lang, name in (("en", "english"),
                                                                                           ("de", "german"))}
    for row in pairs:
        positive, negative = triples[row["group"]]
        assert (row["passage_id"], row["negative_id"]) == (positive, negative)
        assert row["passage"] == collections[row["lang"]][positive]
        assert row["negative"] == collections[row["lang"]][negative]  # in the row's (the passage's) language
    australia = rows_of(pairs, "679128")
    assert australia["de"]["negative"] != australia["en"]["negative"]
    report = pair_source_report(pairs)
    assert report["missing_negatives"] == {"en": 0, "de": 0}
    without = mmarco_pairs(["en", "de"], max_groups=6, base_url=FIXTURE, progress=False)
    assert without.column_names == list(PAIR_COLUMNS)
    assert without.select_columns(list(PAIR_COLUMNS)).to_pandas().equals(
        pairs.select_columns(list(PAIR_COLUMNS)).to_pandas())  # the same pairs, with or without negatives


def test_a_negative_missing_from_one_language_keeps_the_group(tmp_path):
    for lang in ("en", "de"):
        (tmp_path / f"q-{lang}.tsv").write_text("1\tq one\n2\tq two\n", encoding="utf-8")
    (tmp_path / "c-en.tsv").write_text("10\tp ten\n20\tp twenty\n30\tp thirty\n", encoding="utf-8")
    (tmp_path / "c-de.tsv").write_text("10\tP zehn\n20\tP zwanzig\n", encoding="utf-8")  # no 30
    (tmp_path / "triples.tsv").write_text("1\t10\t30\n2\t20\t10\n")
    files = {lang: str(tmp_path / f"q-{lang}.tsv") for lang in ("en", "de")}
    collections = {lang: str(tmp_path / f"c-{lang}.tsv") for lang in ("en", "de")}
    pairs = stream_parallel_pairs(files, collections, str(tmp_path / "triples.tsv"), progress=False, negatives=True)
    assert pairs["negative"] == ["p thirty", None, "p ten", "P zehn"]
    assert pair_source_report(pairs)["missing_negatives"] == {"en": 0, "de": 1}
    (tmp_path / "pairs.tsv").write_text("1\t10\n2\t20\n")
    with pytest.raises(ValueError, match="not a triples file"):
        stream_parallel_pairs(files, collections, str(tmp_path / "pairs.tsv"), progress=False, negatives=True)


def test_mmarco_cache_keys_on_negatives(tmp_path):
    from hybridlib.data.pair_sources import cached_mmarco_pairs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = cached_mmarco_pairs(["en"], 4, tmp_path, base_url=FIXTURE, progress=False)
        triples = cached_mmarco_pairs(["en"], 4, tmp_path, base_url=FIXTURE, progress=False, negatives=True)
    names = sorted(path.name for path in (tmp_path / "pairs").glob("*.parquet"))
    assert len(names) == 2 and any(name.endswith("-negatives.parquet") for name in names)
    assert "negative" not in plain.column_names and "negative" in triples.column_names
    again = cached_mmarco_pairs(["en"], 4, tmp_path, base_url=FIXTURE, progress=False, negatives=True)
    assert again.to_pandas().equals(triples.to_pandas())
