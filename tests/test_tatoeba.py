"""Tatoeba (XTREME / XTREME-R bitext retrieval) on the real files: counts, the pinned download, and XTREME's metric
checked against a brute-force computation."""

import shutil

import numpy as np
import pandas as pd
import pytest

from hybridlib.data import tatoeba as tatoeba_data
from hybridlib.data.pinned import TATOEBA, TATOEBA_XTREME_R_ONLY, task_languages
from hybridlib.evaluation.stats import bootstrap_ci, paired_test
from hybridlib.evaluation.tasks import check_per_query, get_task
from hybridlib.evaluation.tasks.tatoeba import summarize, tatoeba_per_query
from hybridlib.runs.config import resolve_params

# the data README's oracle: 41 languages, 36,692 pairs; these 8 have fewer than 1,000
FEWER = {"jv": 205, "ka": 746, "kk": 575, "ml": 687, "sw": 390, "ta": 307, "te": 234, "th": 548}


@pytest.fixture(scope="module")
def pairs(data_dir):
    return tatoeba_data.load_tatoeba(data_dir=data_dir)


def test_every_language_and_pair_count_as_the_data_readme_says(pairs):
    counts = pairs.groupby("lang").size()
    assert len(counts) == 41 and counts.sum() == 36692
    assert counts[counts < 1000].to_dict() == FEWER
    assert len(TATOEBA) - len(TATOEBA_XTREME_R_ONLY) == 36  # XTREME's 36 plus XTREME-R's az lt pl ro uk
    assert set(TATOEBA_XTREME_R_ONLY) <= set(counts.index)
    assert {"fa", "sw", "zh", "tl"} <= set(counts.index)  # XTREME's mapping of pes, swh, cmn, tgl
    assert task_languages("tatoeba") == sorted(counts.index)
    assert not (pairs["en"].str.strip() != pairs["en"]).any() and not (pairs["xx"] == "").any()
    first = pairs[(pairs.lang == "de") & (pairs["index"] == 0)].iloc[0]
    assert first["xx"] and first["en"] and first["xx"] != first["en"]


def test_max_pairs_is_the_first_n_lines_of_each_language(pairs, data_dir):
    few = tatoeba_data.load_tatoeba(["de", "te"], max_pairs=300, data_dir=data_dir)
    assert few.groupby("lang").size().to_dict() == {"de": 300, "te": 234}
    whole = pairs[pairs.lang.isin(["de", "te"])].groupby("lang").head(300).reset_index(drop=True)
    pd.testing.assert_frame_equal(few, whole)
    with pytest.raises(ValueError, match="max_pairs=0: must be a positive number"):
        tatoeba_data.load_tatoeba(["de"], max_pairs=0, data_dir=data_dir)
    with pytest.raises(ValueError, match="Tatoeba has no language 'xx'"):
        tatoeba_data.load_tatoeba(["xx"], data_dir=data_dir)


def test_download_from_the_pinned_url_checks_sha256_into_the_cache(data_dir, tmp_path, monkeypatch):
    """The real download path, fed from local files (file:// URLs): fetched once into the cache, sha256-checked;
    a file with other bytes upstream is refused and leaves nothing behind."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    for name in ("tatoeba.deu-eng.deu", "tatoeba.deu-eng.eng"):
        shutil.copy(data_dir / "tatoeba" / name, upstream / name)
    monkeypatch.setattr(tatoeba_data, "_RAW", upstream.as_uri() + "/{name}")  # the pinned URL's file name
    monkeypatch.delenv("HYBRIDLIB_DATA_DIR")
    monkeypatch.setenv("HYBRIDLIB_CACHE_DIR", str(tmp_path / "cache"))
    got = tatoeba_data.load_tatoeba(["de"], max_pairs=5)
    assert len(got) == 5 and (tmp_path / "cache" / "data" / "tatoeba" / "tatoeba.deu-eng.deu").is_file()
    (upstream / "tatoeba.deu-eng.deu").unlink()  # a second load reads the cache, never the source
    assert tatoeba_data.load_tatoeba(["de"], max_pairs=5).equals(got)
    shutil.copy(data_dir / "tatoeba" / "tatoeba.fra-eng.fra", upstream / "tatoeba.fra-eng.fra")
    with open(upstream / "tatoeba.fra-eng.fra", "a", encoding="utf-8") as handle:
        handle.write("une ligne de trop\n")
    with pytest.raises(ValueError, match="sha256 mismatch .*tatoeba.fra-eng.fra"):
        tatoeba_data.tatoeba_file("fr", "xx")
    assert not (tmp_path / "cache" / "data" / "tatoeba" / "tatoeba.fra-eng.fra").exists()


def test_a_missing_local_file_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tatoeba/tatoeba\.deu-eng\.deu is missing.*HYBRIDLIB_DATA_DIR"):
        tatoeba_data.load_tatoeba(["de"], data_dir=tmp_path)


def unit_vectors(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_pairs(per_lang: dict) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"lang": lang, "index": range(n), "en": "e", "xx": "x"})
                      for lang, n in per_lang.items()], ignore_index=True)


def test_an_identity_embedding_scores_one_and_a_shuffled_one_about_one_in_n():
    pairs = synthetic_pairs({"de": 400, "fr": 300})
    english = unit_vectors(len(pairs))
    perfect = summarize(tatoeba_per_query(pairs, english, english.copy()), None)
    assert perfect["accuracy"] == {"en_xx": 1.0, "xx_en": 1.0}
    shuffled = english.copy()
    rng = np.random.default_rng(1)
    for lang, rows in pairs.groupby("lang").indices.items():
        shuffled[rows] = english[rng.permutation(rows)]
    report = summarize(tatoeba_per_query(pairs, english, shuffled), None)
    for direction in ("en_xx", "xx_en"):  # a random permutation fixes one line on average: about 1/N
        assert report["accuracy"][direction] <= 5 / 300
        assert report["per_language"]["de"]["accuracy"][direction] <= 5 / 400


@pytest.fixture(scope="module")
def tiny_params():
    return resolve_params({"model": "tiny-random", "eval_benchmarks": ["tatoeba"], "eval_languages": ["de", "ja", "sw"],
                           "tatoeba_max_pairs": 120, "eval_batch_size": 64, "passage_max_length": 48})


@pytest.fixture(scope="module")
def tiny_result(tiny_params):
    from hybridlib.models.build import build_model

    task = get_task("tatoeba")
    data = task.load(tiny_params)
    model = build_model(tiny_params)
    return data, model, task.evaluate(model, data, tiny_params, progress=False)


def test_accuracy_equals_a_brute_force_computation_on_real_files(tiny_result, tiny_params):
    """XTREME's metric by hand: cosine similarity of every English line with every line of the other side, the
    argmax, compared with the line's own index; a plain mean over languages."""
    data, model, result = tiny_result
    pairs = data.extra["pairs"]
    english = model.encode(pairs["en"], "passage", show_progress=False)
    other = model.encode(pairs["xx"], "passage", show_progress=False)
    expected = {}
    for lang in ("de", "ja", "sw"):
        rows = np.flatnonzero(pairs["lang"] == lang)
        similarity = english[rows] @ other[rows].T
        expected[lang] = (float(np.mean(similarity.argmax(axis=1) == np.arange(len(rows)))),
                          float(np.mean(similarity.argmax(axis=0) == np.arange(len(rows)))))
    report = result["metrics"]
    assert report["languages"] == ["de", "ja", "sw"] and report["max_pairs"] == 120
    for lang, (en_xx, xx_en) in expected.items():
        assert report["per_language"][lang]["accuracy"] == pytest.approx({"en_xx": en_xx, "xx_en": xx_en})
        assert report["per_language"][lang]["pairs"] == 120
    assert report["accuracy"]["en_xx"] == pytest.approx(np.mean([v[0] for v in expected.values()]))
    assert report["accuracy"]["xx_en"] == pytest.approx(np.mean([v[1] for v in expected.values()]))
    assert 0 < report["accuracy"]["en_xx"] < 1  # a random model: neither perfect nor nothing


def test_the_per_query_table_feeds_the_statistics_like_any_task(tiny_result):
    _, _, result = tiny_result
    table = check_per_query(get_task("tatoeba"), result["per_query"])
    assert len(table) == 2 * 3 * 120 and set(table["setting"]) == {"en_xx", "xx_en"}
    interval = bootstrap_ci(table, "accuracy", "en_xx", replicates=500)
    assert interval["mean"] == pytest.approx(result["metrics"]["accuracy"]["en_xx"])
    assert interval["low"] < interval["mean"] < interval["high"]
    better = table.assign(accuracy=np.where(table["setting"] == "en_xx", 1.0, table["accuracy"]))
    test = paired_test(better, table, "accuracy", "en_xx", permutations=2000)
    assert test["difference"] == pytest.approx(1 - result["metrics"]["accuracy"]["en_xx"])
    assert test["p_value"] < 0.01


def test_eval_languages_select_tatoeba_languages_and_english_is_the_pivot():
    params = resolve_params({"eval_benchmarks": ["xquad-r", "tatoeba"],
                             "eval_languages": ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]})
    assert get_task("tatoeba").languages(params) == ["ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh"]
    assert get_task("xquad-r").languages(params) == ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]
    assert len(get_task("tatoeba").languages(resolve_params({"eval_benchmarks": ["tatoeba"]}))) == 41
