import json
from collections import Counter

import pandas as pd
import pytest

from hybridlib.data import benchmarks as data
from hybridlib.data.pinned import BENCHMARKS
from hybridlib.data.benchmarks import download_file, load_benchmark, load_pairs, overlap_report, sha256_of

# The per-language counts table of ../shared/data/README.md: (XQuAD-R q, cand, MLQA-R q, cand).
README_COUNTS = {
    "ar": (1190, 1222, 517, 2545), "de": (1190, 1276, 512, 2362), "el": (1190, 1234, None, None),
    "en": (1190, 1180, 1148, 6264), "es": (1190, 1215, 500, 1787), "hi": (1190, 1244, 507, 2426),
    "ru": (1190, 1219, None, None), "th": (1190, 852, None, None), "tr": (1190, 1167, None, None),
    "vi": (1190, 1209, 511, 2828), "zh": (1190, 1196, 504, 2322),
}


def test_xquad_counts_match_readme(xquad):
    counts = xquad.counts()
    for lang, (q, c, _, _) in README_COUNTS.items():
        assert (counts.loc[lang, "queries"], counts.loc[lang, "candidates"]) == (q, c), lang


def test_mlqa_counts_match_readme(mlqa):
    counts = mlqa.counts()
    expected = {lang: v[2:] for lang, v in README_COUNTS.items() if v[2] is not None}
    assert sorted(expected) == mlqa.languages
    for lang, (q, c) in expected.items():
        assert (counts.loc[lang, "queries"], counts.loc[lang, "candidates"]) == (q, c), lang


def test_xquad_relevance_spans_all_languages(xquad):
    groups = Counter(xquad.queries["group"])
    assert len(groups) == 1190 and set(groups.values()) == {11}
    assert all(len(r) == 11 for r in xquad.relevant.values())
    candidate_ids = set(xquad.candidates["id"])
    for qid, rel in list(xquad.relevant.items())[:500]:
        assert rel <= candidate_ids
        assert sorted(c.split(":")[0] for c in rel) == xquad.languages


def test_mlqa_groups_have_2_to_4_languages_always_english(mlqa):
    langs_per_group = {}
    for group, lang in zip(mlqa.queries["group"], mlqa.queries["lang"]):
        langs_per_group.setdefault(group, set()).add(lang)
    assert len(langs_per_group) == 1148
    assert {len(v) for v in langs_per_group.values()} == {2, 3, 4}
    assert all("en" in v for v in langs_per_group.values())
    for qid, group in zip(mlqa.queries["id"], mlqa.queries["group"]):
        assert {c.split(":")[0] for c in mlqa.relevant[qid]} == langs_per_group[group]


def test_gold_sentence_contains_the_answer(data_dir, xquad):
    """Independent check of the gold construction against the raw SQuAD answer text."""
    raw = json.loads((data_dir / "xquad-r" / "de.json").read_text())
    answers = {qa["id"]: qa["answers"][0]["text"] for art in raw["data"] for p in art["paragraphs"] for qa in p["qas"]}
    text = dict(zip(xquad.candidates["id"], xquad.candidates["text"]))
    de = [(q, g) for q, g, lang in zip(xquad.queries["id"], xquad.queries["group"], xquad.queries["lang"]) if lang == "de"]
    inside = sum(answers[g] in text[next(c for c in xquad.relevant[q] if c.startswith("de:"))] for q, g in de)
    assert inside / len(de) > 0.95  # answers crossing a sentence break are the rare exception


def test_max_groups_keeps_first_groups_and_their_paragraphs(data_dir):
    small = load_benchmark("xquad-r", languages=["en", "de", "th"], data_dir=data_dir, max_groups=50)
    assert len(set(small.queries["group"])) == 50
    assert Counter(small.queries["lang"]) == {"en": 50, "de": 50, "th": 50}
    candidate_ids = set(small.candidates["id"])
    kept_paragraphs = {c.rsplit(":", 1)[0] for rel in small.relevant.values() for c in rel}
    assert {c.rsplit(":", 1)[0] for c in candidate_ids} == kept_paragraphs
    assert all(rel <= candidate_ids and len(rel) == 3 for rel in small.relevant.values())


def test_unknown_language_is_a_clear_error(data_dir):
    with pytest.raises(ValueError, match=r"\['el'\] not in mlqa-r"):
        load_benchmark("mlqa-r", languages=["en", "el"], data_dir=data_dir)
    with pytest.raises(ValueError, match="unknown benchmark 'xquad'"):
        load_benchmark("xquad", data_dir=data_dir)


def test_missing_local_file_names_path_and_fix(tmp_path):
    (tmp_path / "xquad-r").mkdir()
    with pytest.raises(FileNotFoundError, match=r"xquad-r/en\.json is missing.*HYBRIDLIB_DATA_DIR"):
        load_benchmark("xquad-r", languages=["en"], data_dir=tmp_path)


def test_corrupt_local_file_is_rejected(tmp_path, data_dir):
    (tmp_path / "xquad-r").mkdir()
    broken = tmp_path / "xquad-r" / "en.json"
    broken.write_bytes((data_dir / "xquad-r" / "en.json").read_bytes()[:1000])
    with pytest.raises(ValueError, match="sha256"):
        load_benchmark("xquad-r", languages=["en"], data_dir=tmp_path)


def test_download_into_cache_verifies_and_reuses(tmp_path, data_dir, monkeypatch):
    """The real download path, fed by file:// URLs to the local copy (no network in tests)."""
    monkeypatch.delenv("HYBRIDLIB_DATA_DIR", raising=False)
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_RAW", f"file://{data_dir}/{{name}}/{{lang}}.json#{{commit}}")
    bench = load_benchmark("mlqa-r", languages=["en", "de"])
    cached = tmp_path / "cache" / "data" / "mlqa-r" / "de.json"
    assert sha256_of(cached) == BENCHMARKS["mlqa-r"]["sha256"]["de"]
    assert Counter(bench.queries["lang"]) == {"en": 1148, "de": 512}
    # a second load reads the cache: point the URL somewhere dead to prove nothing is fetched
    monkeypatch.setattr(data, "_RAW", "file:///nonexistent/{name}/{lang}.json#{commit}")
    assert len(load_benchmark("mlqa-r", languages=["de"]).queries) == 512


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, data_dir):
    dest = tmp_path / "out" / "en.json"
    with pytest.raises(ValueError, match="sha256 mismatch"):
        download_file(f"file://{data_dir}/xquad-r/en.json", dest, "0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    good = BENCHMARKS["xquad-r"]["sha256"]["en"]
    assert sha256_of(download_file(f"file://{data_dir}/xquad-r/en.json", dest, good)) == good


def test_offline_download_error_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.delenv("HYBRIDLIB_DATA_DIR", raising=False)
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(data, "_RAW", "file:///nonexistent/{name}/{lang}.json#{commit}")
    with pytest.raises(RuntimeError, match=r"HYBRIDLIB_DATA_DIR=<folder>"):
        load_benchmark("xquad-r", languages=["en"])
    assert not any((tmp_path / "data" / "xquad-r").iterdir())


def test_pairs_from_benchmark_pairs_question_with_its_gold(mlqa, mlqa_pairs):
    assert len(mlqa_pairs) == len(mlqa.queries) == 4199
    assert Counter(mlqa_pairs["lang"]) == Counter(mlqa.queries["lang"])
    candidates = set(mlqa.candidates["text"])
    assert set(mlqa_pairs["passage"]) <= candidates
    assert set(mlqa_pairs["query"]) == set(mlqa.queries["text"])


def test_load_pairs_from_files_and_frames(tmp_path, mlqa_pairs):
    frame = mlqa_pairs.select(range(100)).to_pandas()
    frame.to_json(tmp_path / "p.jsonl", orient="records", lines=True, force_ascii=False)
    frame.assign(extra=1).to_parquet(tmp_path / "p.parquet")
    for source in (tmp_path / "p.jsonl", tmp_path / "p.parquet", frame, mlqa_pairs.select(range(100))):
        table = load_pairs(source)
        assert table.column_names == ["group", "lang", "query", "passage"]
        assert table["query"] == frame["query"].tolist()
    with pytest.raises(ValueError, match=r"lacks columns \['passage'\]"):
        load_pairs(frame.drop(columns="passage"))
    with pytest.raises(ValueError, match="unsupported suffix '.txt'"):
        (tmp_path / "p.txt").write_text("x")
        load_pairs(tmp_path / "p.txt")


def test_mlqa_training_pairs_do_not_overlap_xquad(mlqa_pairs, xquad, mlqa):
    report = overlap_report(mlqa_pairs, xquad)
    assert report["train_queries"] > 4000
    assert report["query_overlap"] == 0 and report["passage_overlap"] == 0
    same = overlap_report(mlqa_pairs, mlqa)  # the check must see overlap when there is some
    assert same["query_overlap"] == same["train_queries"]
    assert same["passage_overlap"] == same["train_passages"]


def test_overlap_is_whitespace_and_case_insensitive(xquad):
    text = xquad.candidates["text"][0]
    pairs = pd.DataFrame({"group": ["g"], "lang": ["en"], "query": ["nothing like it"],
                          "passage": ["  " + text.upper().replace(" ", "\n  ") + " "]})
    report = overlap_report(load_pairs(pairs), xquad)
    assert report["passage_overlap"] == 1 and report["query_overlap"] == 0
