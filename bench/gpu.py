"""GPU throughput of hybridlib's training and evaluation paths (issue 5, part 3).

Trains an ``xlm-roberta-base``-sized encoder (random initialisation: speed does not depend on the
weights) with ``hybridlib.train.train`` at batch 100, queries of 64 and passages of 256 tokens (texts
long enough to fill both limits), bf16 autocast, fused AdamW, with and without gradient checkpointing
(and optionally ``torch.compile``). Reports tokens/s, peak GPU memory and model FLOPs utilisation
(MFU: the model's own FLOPs, 6 x non-embedding parameters per token plus attention, over the chip's
dense bf16 peak; recomputation under checkpointing is not counted). Then times the encoding of the
full XQuAD-R (13,090 queries, 13,014 candidates) with ``BiEncoder.encode`` and, if installed, with
``SentenceTransformer.encode`` on the same weights, plus ``evaluate_embeddings`` when the data
libraries are there.

Needs two prepared inputs (the GPU machine has no network and no copy of the data)::

    python bench/gpu.py --prepare bench/_carry          # here: tokenizer + XQuAD-R texts (~20 MB)
    python bench/gpu.py --inputs bench/_carry --out $OUT/gpu.json   # on the GPU machine

Every finished measurement is written to the JSON report at once, so a run cut short keeps them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, no install needed

from bench.harness import spread, sync, timed, write_report  # noqa: E402
from hybridlib.model import BiEncoder  # noqa: E402
from hybridlib.sampler import Batch  # noqa: E402
from hybridlib.train import train  # noqa: E402

# dense bf16 tensor-core peak (no sparsity), from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def prepare(folder: Path) -> None:
    """Write the XLM-R tokenizer and the XQuAD-R texts (queries, candidates, relevance) to ``folder``."""
    from hybridlib.data import load_benchmark
    from hybridlib.embedded import shared_embedded_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    shared_embedded_tokenizer().save_pretrained(folder / "tokenizer")
    bench = load_benchmark("xquad-r")
    texts = {
        "queries": {"id": list(bench.queries["id"]), "text": list(bench.queries["text"])},
        "candidates": {"id": list(bench.candidates["id"]), "text": list(bench.candidates["text"])},
        "relevant": {q: sorted(c) for q, c in bench.relevant.items()},
    }
    with gzip.open(folder / "xquad-r.json.gz", "wt", encoding="utf-8") as f:
        json.dump(texts, f)
    print(f"wrote {folder}: tokenizer/, xquad-r.json.gz ({len(texts['queries']['id'])} queries)")


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def model_flops_per_step(config, batch: int, query_len: int, passage_len: int) -> float:
    """Training FLOPs of one step: 6 N per token (forward + backward) plus attention scores and mixing."""
    d, layers, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * d * d + 2 * d * ff  # weights of Q, K, V, O and the two feed-forward matrices
    n = layers * per_layer
    total = 0.0
    for seq in (query_len, passage_len):
        total += 6 * n * batch * seq + 12 * layers * batch * seq * seq * d
    return total


def long_texts(count: int, words: int, seed: int) -> list[str]:
    """Texts of random words, long enough to be truncated at the max length (every row is full)."""
    import random

    rng = random.Random(seed)
    vocab = "the of and to in retrieval language model passage query batch training data".split()
    return [" ".join(rng.choice(vocab) for _ in range(words)) for _ in range(count)]


def build_model(tokenizer, args) -> BiEncoder:
    from transformers import AutoModel, XLMRobertaConfig

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer))  # defaults are xlm-roberta-base's shape
    if args.size == "large":  # xlm-roberta-large's shape
        config = XLMRobertaConfig(vocab_size=len(tokenizer), num_hidden_layers=24, hidden_size=1024,
                                  num_attention_heads=16, intermediate_size=4096)
    if args.tiny:  # CPU smoke test of this script
        config = XLMRobertaConfig(vocab_size=len(tokenizer), num_hidden_layers=2, hidden_size=64,
                                  num_attention_heads=2, intermediate_size=128)
    encoder = AutoModel.from_config(config, attn_implementation=args.attention, add_pooling_layer=False)
    return BiEncoder(encoder, tokenizer, query_max_length=64, passage_max_length=256).to(args.device)


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


def measure_training(tokenizer, args, checkpointing: bool, compile_model: bool) -> dict:
    model = build_model(tokenizer, args)
    if checkpointing:
        model.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if compile_model:
        model.encoder = torch.compile(model.encoder)
    n = args.batch_size
    batches = [
        Batch(kinds=["cross"] * n, groups=[str(i) for i in range(n)], query_langs=["en"] * n,
              passage_langs=["de"] * n, queries=long_texts(n, 80, s), passages=long_texts(n, 320, s + 1))
        for s in range(args.warmup + args.steps)
    ]
    sync(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    stamps = [time.perf_counter()]
    train(model, iter(batches), steps=len(batches), lr=1e-5, mixed_precision="bf16", progress=False,
          callback=lambda step, record: stamps.append(time.perf_counter()))  # loss.item() syncs each step
    step_s = [b - a for a, b in zip(stamps, stamps[1:])][args.warmup :]
    median = spread(step_s)["median"]
    flops = model_flops_per_step(model.encoder.config, n, 64, 256)
    peak = peak_tflops(device_name(args.device))
    tokens = n * (64 + 256)
    result = {
        "gradient_checkpointing": checkpointing, "torch_compile": compile_model, "attention": args.attention,
        "batch_size": n, "query_tokens": 64, "passage_tokens": 256, "tokens_per_step": tokens,
        "steps_measured": len(step_s), "median_step_s": median, "min_step_s": min(step_s),
        "tokens_per_s": tokens / median, "pairs_per_s": n / median,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None,
        "model_tflops_per_step": flops / 1e12, "achieved_tflops": flops / median / 1e12,
        "mfu": (flops / median / 1e12) / peak if peak else None,
        "first_step_s": stamps[1] - stamps[0],
    }
    if not compile_model and not checkpointing:
        result["breakdown"] = step_breakdown(model, batches[: args.warmup + 5], args)
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def step_breakdown(model: BiEncoder, batches: list, args) -> dict:
    """Median seconds of the parts of a step: tokenizing, forward + backward on ready tensors, AdamW."""
    from hybridlib.loss import InfoNCELoss
    from hybridlib.train import make_optimizer

    def each_batch(fn) -> list[float]:
        return [timed(lambda: fn(batch), args.device) for batch in batches][args.warmup :]

    tokens = {}
    tokenize_s = each_batch(lambda b: tokens.__setitem__(id(b), (model.tokenize(b.queries, "query"),
                                                           model.tokenize(b.passages, "passage"))))
    loss_fn = InfoNCELoss()
    model.train()

    def forward_backward(batch):
        q, p = tokens[id(batch)]
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16):
            out = loss_fn(model(q), model(p))
        model.zero_grad(set_to_none=True)
        out.loss.backward()

    fwd_bwd_s = each_batch(forward_backward)
    optimizer = make_optimizer(model, 1e-5, 0.01)
    optimizer_s = each_batch(lambda b: optimizer.step())
    flops = model_flops_per_step(model.encoder.config, args.batch_size, 64, 256)
    peak = peak_tflops(device_name(args.device))
    median = spread(fwd_bwd_s)["median"]
    return {"tokenize_s": spread(tokenize_s)["median"], "forward_backward_s": median,
            "adamw_fused_s": spread(optimizer_s)["median"],
            "forward_backward_mfu": (flops / median / 1e12) / peak if peak else None}


def measure_evaluation(tokenizer, args, data: dict) -> dict:
    model = build_model(tokenizer, args)
    queries, candidates = data["queries"]["text"], data["candidates"]["text"]
    if args.tiny:
        queries, candidates = queries[:600], candidates[:600]
    out: dict = {"queries": len(queries), "candidates": len(candidates), "batch_size": args.eval_batch_size}
    for precision in ("fp32", "bf16"):
        kind = "cuda" if args.device.startswith("cuda") else "cpu"
        ctx = torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")
        model.encode(queries[:512], "query", batch_size=args.eval_batch_size, show_progress=False)  # warm-up
        sync(args.device)
        started = time.perf_counter()
        with ctx:
            q = model.encode(queries, "query", batch_size=args.eval_batch_size, show_progress=False)
            c = model.encode(candidates, "passage", batch_size=args.eval_batch_size, show_progress=False)
        sync(args.device)
        out[f"ours_encode_{precision}_s"] = time.perf_counter() - started
        if precision == "fp32":
            embeddings = (q, c)
    try:
        from sentence_transformers import SentenceTransformer

        folder = Path(args.scratch) / "st-model"
        model.save(folder)
        st = SentenceTransformer(str(folder), device=args.device)
        st.encode(queries[:512], batch_size=args.eval_batch_size, prompt="query: ")  # warm-up
        sync(args.device)
        started = time.perf_counter()
        sq = st.encode(queries, batch_size=args.eval_batch_size, prompt="query: ", normalize_embeddings=True)
        sc = st.encode(candidates, batch_size=args.eval_batch_size, prompt="passage: ", normalize_embeddings=True)
        sync(args.device)
        out["sentence_transformers_encode_fp32_s"] = time.perf_counter() - started
        out["max_abs_embedding_diff_vs_ours"] = float(max(abs(sq - embeddings[0]).max(), abs(sc - embeddings[1]).max()))
    except Exception as err:  # optional comparison; the GPU machine may lack the package
        out["sentence_transformers_error"] = repr(err)
    if args.tiny:  # the smoke test encodes a slice: time the metrics on random embeddings of full size
        import numpy as np

        rng = np.random.default_rng(0)
        unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.standard_normal((n, 64), dtype=np.float32))  # noqa: E731
        embeddings = (unit(len(data["queries"]["id"])), unit(len(data["candidates"]["id"])))
    try:
        out["metrics"] = time_metrics(data, *embeddings)
    except Exception as err:  # a report without the metrics time beats no report
        out["metrics"] = {"error": repr(err)}
    return out


def time_metrics(data: dict, q, c) -> dict:
    """evaluate_embeddings on the real relevance, when datasets/pandas are installed here."""
    try:
        import datasets

        from hybridlib.data import Benchmark
        from hybridlib.metrics import evaluate_embeddings
    except ImportError as err:
        return {"error": f"not measured here: {err}"}
    langs = lambda ids: [i.split(":", 1)[0] for i in ids]  # noqa: E731
    queries = datasets.Dataset.from_dict({**data["queries"], "lang": langs(data["queries"]["id"]),
                                          "group": [i.split(":", 1)[1] for i in data["queries"]["id"]]})
    candidates = datasets.Dataset.from_dict({**data["candidates"], "lang": langs(data["candidates"]["id"])})
    bench = Benchmark(name="xquad-r", languages=sorted(set(queries["lang"])), queries=queries,
                      candidates=candidates, relevant={k: set(v) for k, v in data["relevant"].items()})
    started = time.perf_counter()
    result = evaluate_embeddings(bench, q, c).report
    return {"seconds": time.perf_counter() - started, "map": result["map"], "rank_distance": result["rank_distance"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", type=Path, help="write the inputs into this folder and stop (run here)")
    ap.add_argument("--inputs", type=Path, default=Path("bench/_carry"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")) / "gpu.json")
    ap.add_argument("--scratch", default="/tmp/hybridlib-gpu")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--eval-batch-size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--attention", default="sdpa", help="transformers attn_implementation")
    ap.add_argument("--size", choices=["base", "large"], default="base", help="xlm-roberta-base or -large shape")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--no-checkpointing-run", action="store_true", help="measure only without checkpointing")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to start)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="2-layer model, short eval: smoke test on CPU")
    ap.add_argument("--budget-s", type=float, default=400, help="skip what would start after this many seconds")
    args = ap.parse_args(argv)
    if args.prepare:
        return prepare(args.prepare)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures the GPU path (bench/speed.py is the CPU one)")
    import transformers
    from transformers import AutoTokenizer

    started = time.perf_counter()
    name = device_name(args.device)
    report: dict = {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
                    "peak_bf16_tflops": peak_tflops(name), "args": {k: str(v) for k, v in vars(args).items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save(key: str, value) -> None:
        report[key] = value
        write_report(args.out, report)
        print(key, json.dumps(value), flush=True)

    tokenizer = AutoTokenizer.from_pretrained(args.inputs / "tokenizer")
    runs = [(False, False)] + ([] if args.no_checkpointing_run else [(True, False)]) + ([(False, True)] if args.compile else [])
    for checkpointing, compile_model in runs:
        if time.perf_counter() - started > args.budget_s:
            save(f"train {args.size} ckpt={checkpointing} compile={compile_model}", {"skipped": "time budget"})
            continue
        try:
            result = measure_training(tokenizer, args, checkpointing, compile_model)
        except Exception as err:
            result = {"error": repr(err)}
        save(f"train {args.size} ckpt={checkpointing} compile={compile_model}", result)
    with gzip.open(args.inputs / "xquad-r.json.gz", "rt", encoding="utf-8") as f:
        data = json.load(f)
    if not args.skip_eval and time.perf_counter() - started < args.budget_s:
        save("evaluation", measure_evaluation(tokenizer, args, data))
    save("wall_s", time.perf_counter() - started)


if __name__ == "__main__":
    main()
