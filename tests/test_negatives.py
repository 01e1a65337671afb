"""Hard negatives end to end: mined in-context negatives, the sampler's guarantees with them, their token ids,
and the training paths (GradCache, packing, train()) that must give the plain path's numbers with them."""

import copy
from collections import Counter

import datasets
import pytest
import torch

from hybridlib.training.cached_loss import cached_contrastive_loss, contrastive_loss
from hybridlib.data.benchmarks import NEGATIVE_COLUMNS, PAIR_COLUMNS, load_benchmark, pairs_from_benchmark
from hybridlib.training.loss import InfoNCELoss
from hybridlib.models.bi_encoder import tiny_model
from hybridlib.data.sampler import HybridBatchSampler
from hybridlib.data.tokens import PairTokens
from hybridlib.training.loop import train

BATCH = 32


@pytest.fixture(scope="module")
def mined(mlqa):
    return pairs_from_benchmark(mlqa, negatives=True)


@pytest.fixture(scope="module")
def base_model():
    return tiny_model()


def no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


# ---------------------------------------------------------------------- mining


def test_mined_negatives_are_other_sentences_of_the_gold_paragraph(mlqa, mlqa_pairs, mined):
    assert mined.column_names == [*PAIR_COLUMNS, *NEGATIVE_COLUMNS]
    assert mined.select_columns(list(PAIR_COLUMNS)).to_pandas().equals(mlqa_pairs.to_pandas())  # same pairs
    text = dict(zip(mlqa.candidates["id"], mlqa.candidates["text"]))
    paragraphs = Counter(c.rsplit(":", 1)[0] for c in mlqa.candidates["id"])
    answers = {}
    for qid, group, lang in zip(mlqa.queries["id"], mlqa.queries["group"], mlqa.queries["lang"]):
        answers.setdefault(next(c for c in mlqa.relevant[qid] if c.startswith(f"{lang}:")), set()).add(group)
    golds = [next(c for c in mlqa.relevant[qid] if c.startswith(f"{lang}:"))
             for qid, lang in zip(mlqa.queries["id"], mlqa.queries["lang"])]
    for row, gold in zip(mined, golds):
        paragraph = gold.rsplit(":", 1)[0]
        others = [f"{paragraph}:{s}" for s in range(paragraphs[paragraph]) if f"{paragraph}:{s}" != gold]
        usable = [c for c in others if len(answers.get(c, ())) <= 1]  # a sentence answering two: skipped
        assert row["passage_id"] == row["group"]
        if not usable:
            assert row["negative"] is None and row["negative_id"] is None
            continue
        (negative,) = [c for c in usable if text[c] == row["negative"]][:1] or [None]
        assert negative is not None, row  # another sentence of the gold's paragraph: the passage's language
        assert row["negative_id"] == next(iter(answers.get(negative, {negative})))
    none = sum(n is None for n in mined["negative"])
    assert none == sum(paragraphs[g.rsplit(":", 1)[0]] == 1 for g in golds) == 275  # one-sentence paragraphs
    again = pairs_from_benchmark(mlqa, negatives=True)
    assert again["negative"] == mined["negative"]  # deterministic: no random state involved


# ---------------------------------------------------------------------- the sampler's guarantees


def check_negatives(batch, table):
    """No group twice; each negative is its passage row's; none answers a query of the batch."""
    assert len(set(batch.groups)) == len(batch)
    answered = {table["passage_id"][row] for row in batch.passage_rows}
    texts = set(batch.passages)
    for row, negative, negative_row, dropped in zip(batch.passage_rows, batch.negatives, batch.negative_rows,
                                                    batch.negative_dropped):
        if negative is not None:
            assert negative_row == row and negative == table["negative"][row]
            assert table["negative_id"][row] not in answered and negative not in texts
        elif dropped:
            assert table["negative_id"][row] in answered  # dropped for a reason
        else:
            assert table["negative"][row] is None  # the pair never had one


@pytest.mark.parametrize("ratios, mix", [({"mono": 0.5, "cross": 0.5}, "per_batch"),
                                         ({"mono": 0.3, "cross": 0.3, "multi": 0.4}, "within_batch")])
def test_sampler_drops_negatives_that_answer_a_query_of_the_batch(mined, mlqa_pairs, ratios, mix):
    columns = {c: mined[c] for c in ("passage_id", "negative_id", "negative")}
    with_negatives = HybridBatchSampler(mined, BATCH, ratios, mix=mix, seed=3)
    without = HybridBatchSampler(mlqa_pairs, BATCH, ratios, mix=mix, seed=3)
    drops, across_languages = 0, 0
    for _ in range(500):
        batch, plain = next(with_negatives), next(without)
        # the same draws: negatives change nothing else
        assert (batch.groups, batch.kinds, batch.passage_rows) == (plain.groups, plain.kinds, plain.passage_rows)
        assert plain.negatives == [] and len(batch.negatives) == BATCH
        check_negatives(batch, columns)
        drops += sum(batch.negative_dropped)
        for row, dropped, lang in zip(batch.passage_rows, batch.negative_dropped, batch.passage_langs):
            if dropped:  # the pair whose passage the negative answers may be in another language
                answers = columns["negative_id"][row]
                other = [pl for g, pl in zip(batch.groups, batch.passage_langs) if g == answers]
                across_languages += other != [lang]
    assert drops > 10  # MLQA-R paragraphs hold several questions: conflicts occur
    if mix == "per_batch":
        assert across_languages > 0  # caught by the language-independent ids, not by the texts


def table(negatives, ids=None):
    """Groups a, b, c in en and de; ``negatives[(group, lang)]`` the negative texts; ``ids`` their negative ids."""
    rows = [(g, lang) for g in "abc" for lang in ("en", "de")]
    columns = {"group": [g for g, _ in rows], "lang": [lang for _, lang in rows],
               "query": [f"q {g} {lang}" for g, lang in rows], "passage": [f"p {g} {lang}" for g, lang in rows],
               "negative": [negatives.get(row) for row in rows]}
    if ids is not None:
        columns["passage_id"] = [g for g, _ in rows]
        columns["negative_id"] = [ids.get(row) for row in rows]
    return datasets.Dataset.from_dict(columns, features=datasets.Features(
        {c: datasets.Value("string") for c in columns}))


def test_hand_made_table_by_text_and_by_id():
    # a's English negative is b's English passage; a's German one is b's answer in German, "c" has one unrelated
    negatives = {("a", "en"): "p b en", ("a", "de"): "p b de", ("c", "en"): "a distractor", ("c", "de"): ""}
    by_text = HybridBatchSampler(table(negatives), 3, {"mono": 1.0}, seed=0)
    by_id = HybridBatchSampler(table(negatives, ids={("a", "en"): "b", ("a", "de"): "b", ("c", "en"): "x"}), 3,
                               {"mono": 1.0}, seed=0)
    for _ in range(20):  # every batch holds all three groups in one language
        text_batch, id_batch = next(by_text), next(by_id)
        lang = text_batch.query_langs[0]
        a, c = text_batch.groups.index("a"), text_batch.groups.index("c")
        for batch in (text_batch, id_batch):
            assert batch.negatives[a] is None and batch.negative_dropped[a]
            assert batch.negatives[c] == ("a distractor" if lang == "en" else None)  # "" is no negative
            assert sum(batch.negative_dropped) == 1
    # cross-lingually only the ids see it: a's German negative answers b, whose passage here is English
    cross_text = HybridBatchSampler(table(negatives), 3, {"cross": 1.0}, seed=1)
    cross_id = HybridBatchSampler(table(negatives, ids={("a", "de"): "b"}), 3, {"cross": 1.0}, seed=1)
    seen = 0
    for _ in range(40):
        text_batch, id_batch = next(cross_text), next(cross_id)
        a, b = text_batch.groups.index("a"), text_batch.groups.index("b")
        if text_batch.passage_langs[a] == "de" and text_batch.passage_langs[b] == "en":
            seen += 1
            assert text_batch.negatives[a] == "p b de" and not text_batch.negative_dropped[a]
            assert id_batch.negatives[a] is None and id_batch.negative_dropped[a]
    assert seen


def test_token_ids_cover_the_negatives(base_model, mined):
    some = mined.select(range(0, len(mined), 20))  # every language
    tokens = PairTokens.build(some, base_model, cache=False)
    sampler = HybridBatchSampler(some, 8, {"multi": 1.0}, seed=0)
    for _ in range(10):
        batch = tokens.attach(next(sampler))
        assert len(batch.negative_ids) == 8
        for text, ids in zip(batch.negatives, batch.negative_ids):
            if text is None:
                assert ids is None
            else:
                assert ids == base_model.token_ids([text], "passage")[0]  # a negative is embedded as a passage
    plain = PairTokens.build(pairs_from_benchmark(load_benchmark("mlqa-r", max_groups=20)), base_model, cache=False)
    assert len(plain.offsets["negative"]) == len(plain) + 1 and len(plain.flat["negative"]) == 0


# ---------------------------------------------------------------------- GradCache, packing, train()


@pytest.fixture(scope="module")
def batch(mined):
    """12 pairs over several languages, two of them without a negative."""
    rows = mined.filter(lambda r: r["negative"] is not None).select(range(0, 1200, 100))
    negatives = list(rows["negative"])
    negatives[3] = negatives[7] = None
    return list(rows["query"]), list(rows["passage"]), negatives


def grads(*modules):
    out = {}
    for i, module in enumerate(modules):
        for name, param in module.named_parameters():
            if param.grad is not None:
                out[f"{i}.{name}"] = param.grad.clone()
            param.grad = None
    return out


@pytest.mark.parametrize("form", ["batch", "paper"])
@pytest.mark.parametrize("chunk_size", [1, 5, 12])
def test_cached_equals_plain_with_negatives_and_dropout(base_model, batch, form, chunk_size):
    model = copy.deepcopy(base_model).train()
    queries, passages, negatives = batch
    loss_fn = InfoNCELoss(learnable_temperature=True, symmetric=True, form=form)

    def chunked(texts, role):  # the plain path with the cached path's chunks: the same dropout draws
        return torch.cat([model.embed(texts[s:s + chunk_size], role) for s in range(0, len(texts), chunk_size)])

    torch.manual_seed(1)
    plain = contrastive_loss(chunked, queries, passages, loss_fn, negatives=negatives)
    plain.loss.backward()
    expected = grads(model, loss_fn)
    torch.manual_seed(1)
    cached = cached_contrastive_loss(model.embed, queries, passages, loss_fn, chunk_size, negatives=negatives)
    cached.loss.backward()
    got = grads(model, loss_fn)
    assert cached.loss.item() == pytest.approx(plain.loss.item(), abs=1e-6)
    assert cached.hard_negative_similarity == pytest.approx(plain.hard_negative_similarity, abs=1e-6)
    assert got.keys() == expected.keys() and "1.logit_scale" in got
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-6, rtol=1e-5), (name, float((got[name] - grad).abs().max()))
    # the negatives matter: without them the loss differs
    assert abs(contrastive_loss(chunked, queries, passages, InfoNCELoss()).loss.item() - plain.loss.item()) > 1e-3


def test_a_batch_whose_negatives_are_all_missing(base_model, batch):
    model = no_dropout(copy.deepcopy(base_model))
    queries, passages, _ = batch
    none = [None] * len(queries)
    with_mask = contrastive_loss(model.embed, queries, passages, InfoNCELoss(), negatives=none)
    without = contrastive_loss(model.embed, queries, passages, InfoNCELoss())
    assert with_mask.loss.item() == pytest.approx(without.loss.item(), abs=1e-6)  # masked negatives count for nothing
    assert with_mask.hard_negative_similarity is None
    cached = cached_contrastive_loss(model.embed, queries, passages, InfoNCELoss(), 4, negatives=none)
    cached.loss.backward()
    assert cached.loss.item() == pytest.approx(without.loss.item(), abs=1e-6)


def short_train(model, pairs, **kwargs):
    sampler = HybridBatchSampler(pairs, 8, {"mono": 0.5, "cross": 0.5}, seed=0)
    return train(model, sampler, steps=3, lr=3e-3, progress=False, **kwargs)


@pytest.fixture(scope="module")
def train_pairs(mined):
    return mined.filter(lambda r: r["lang"] in ("en", "de", "es"))


def test_train_with_negatives_logs_them_and_packing_and_gradcache_agree(base_model, train_pairs):
    """Dropout off: packed sequences, padded ones and GradCache chunks give the same steps with negatives."""
    def run(**kwargs):
        return short_train(no_dropout(copy.deepcopy(base_model)), train_pairs, max_padding=None, **kwargs)

    padded, packed, cached = run(packing=False), run(packing=True), run(packing=False, cache_chunk_size=3)
    for a, b, c in zip(padded, packed, cached):
        assert a["kind"] == b["kind"] == c["kind"]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5) and c["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert c["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
        assert b["hard_negative_similarity"] == pytest.approx(a["hard_negative_similarity"], abs=1e-5)
    for record in padded:
        assert 0 < record["negatives"] <= 8 and record["negatives"] + record["negatives_dropped"] <= 8
        assert -1 <= record["hard_negative_similarity"] <= 1
    paper = run(packing=False, loss_fn=InfoNCELoss(form="paper"))
    assert [r["kind"] for r in paper] == [r["kind"] for r in padded]
    assert paper[0]["loss"] != pytest.approx(padded[0]["loss"], abs=1e-3)  # another loss, same batches
