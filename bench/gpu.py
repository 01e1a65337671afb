"""GPU throughput of hybridlib's training and evaluation on real text lengths: padded, packed, packed + compile.

What a researcher pays for is GPU-hours per sweep, i.e. useful (non-padding) tokens per second on real length
distributions. Batches of ``--batch-size`` pairs are drawn from real pairs (MLQA-R, and an mMARCO-layout sample
when ``--prepare`` was given one), tokenized with the XLM-R vocabulary, for an ``xlm-roberta-base`` or -large shaped
encoder with random weights (speed does not depend on the weights), bf16 autocast, fused AdamW. Variants, each a
``hybridlib.training.loop.train`` loop, interleaved step by step (``bench/harness.py``):

- ``padded+tokenize``: one pass per side padded to its longest text, the tokenizer called in the step (the path
  before this round);
- ``padded``: the same on token ids prepared once (``tokens.PairTokens``);
- ``packed``: each side as one padding-free sequence with PyTorch's varlen attention (``BiEncoder.embed_packed``);
- ``packed+compile``: the same with ``torch.compile`` on the encoder.

Reported per variant: median step time (with min and max over rounds), useful tokens/s, MFU counted on useful
tokens only (6 x non-embedding parameters per token plus attention, over the chip's dense bf16 peak), peak memory;
the ratio of useful tokens/s to ``padded+tokenize``. Then the full XQuAD-R encode: padded fp32 (as evaluation runs
today), padded bf16, packed bf16.

    python bench/gpu.py --prepare bench/_carry [--mmarco DIR]    # here: tokenizer, texts, token ids (~30 MB)
    python bench/gpu.py --inputs bench/_carry --out $OUT/gpu.json  # on the GPU machine (no network needed)

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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, no install needed

from bench.harness import StepByStep, interleave, machine, ratio, spread, sync, timed, write_report  # noqa: E402
from hybridlib.models.bi_encoder import BiEncoder, varlen_available
from hybridlib.data.sampler import Batch
from hybridlib.data.tokens import PairTokens
from hybridlib.training.loop import train

# dense bf16 tensor-core peak (no sparsity), from the vendors' data sheets
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0, "A10": 125.0}
SHAPES = {"base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
          "large": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, intermediate_size=4096),
          "tiny": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128)}
MAX_LENGTHS = {"query": 64, "passage": 256}  # params/paper-common.yaml


# ------------------------------------------------------------------------------------------ inputs


def prepare(folder: Path, mmarco: Path | None) -> None:
    """Write the XLM-R tokenizer, the pair sources' texts and token ids, and XQuAD-R's texts to ``folder``."""
    from hybridlib.data.benchmarks import load_benchmark, pairs_from_benchmark
    from hybridlib.models.embedded import shared_embedded_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = shared_embedded_tokenizer()
    tokenizer.save_pretrained(folder / "tokenizer")
    encoder = BiEncoder(_random_encoder(tokenizer, "tiny"), tokenizer, query_prefix="", passage_prefix="",
                        query_max_length=MAX_LENGTHS["query"], passage_max_length=MAX_LENGTHS["passage"])
    sources = {"mlqa-r": pairs_from_benchmark(load_benchmark("mlqa-r"))}
    if mmarco is not None:
        from hybridlib.data.pair_sources import mmarco_pairs

        sources["mmarco"] = mmarco_pairs(["en", "de", "zh"], max_groups=3000, base_url=mmarco, progress=False)
    for name, pairs in sources.items():
        PairTokens.build(pairs, encoder, cache=False).save(folder / f"pairs-{name}.npz")
        with gzip.open(folder / f"pairs-{name}.json.gz", "wt", encoding="utf-8") as f:
            json.dump({"query": list(pairs["query"]), "passage": list(pairs["passage"])}, f)
    bench = load_benchmark("xquad-r")
    with gzip.open(folder / "xquad-r.json.gz", "wt", encoding="utf-8") as f:
        json.dump({"queries": list(bench.queries["text"]), "candidates": list(bench.candidates["text"])}, f)
    print(f"wrote {folder}: tokenizer/, {', '.join(f'pairs-{n}' for n in sources)}, xquad-r.json.gz")


def load_pairs(folder: Path, name: str) -> tuple[PairTokens, dict]:
    tokens = PairTokens.load(folder / f"pairs-{name}.npz")
    with gzip.open(folder / f"pairs-{name}.json.gz", "rt", encoding="utf-8") as f:
        return tokens, json.load(f)


def draw_batches(tokens: PairTokens, texts: dict, batch: int, count: int, seed: int) -> list[Batch]:
    """Batches of random pairs (real texts, real lengths); every variant gets this same list."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        rows = rng.choice(len(tokens), size=batch, replace=False).tolist()
        batches.append(Batch(kinds=["mono"] * batch, groups=[str(r) for r in rows], query_langs=["x"] * batch,
                             passage_langs=["x"] * batch, queries=[texts["query"][r] for r in rows],
                             passages=[texts["passage"][r] for r in rows], query_rows=rows, passage_rows=rows))
    return batches


# ------------------------------------------------------------------------------------------ model


def _random_encoder(tokenizer, size: str):
    from transformers import AutoModel, XLMRobertaConfig

    torch.manual_seed(0)
    config = XLMRobertaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **SHAPES[size])
    return AutoModel.from_config(config, attn_implementation="sdpa", add_pooling_layer=False)


def build_model(tokenizer, args, compile_model: bool = False) -> BiEncoder:
    model = BiEncoder(_random_encoder(tokenizer, args.size), tokenizer, query_prefix="", passage_prefix="",
                      query_max_length=MAX_LENGTHS["query"], passage_max_length=MAX_LENGTHS["passage"])
    model = model.to(args.device)
    if compile_model:
        model.encoder = torch.compile(model.encoder, dynamic=True)
    return model


def useful_flops(config, lengths: list[int]) -> float:
    """Training FLOPs on the real tokens of texts with these lengths: 6 N per token plus attention."""
    d, layers = config.hidden_size, config.num_hidden_layers
    n = layers * (4 * d * d + 2 * d * config.intermediate_size)  # Q, K, V, O and the feed-forward weights
    return sum(6 * n * length + 12 * layers * d * length * length for length in lengths)


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


# ------------------------------------------------------------------------------------------ measurements


VARIANTS = {  # name -> (packing, token ids prepared, torch.compile)
    "padded+tokenize": (False, False, False),
    "padded": (False, True, False),
    "packed": (True, True, False),
    "packed+compile": (True, True, True),
}


def measure_training(tokenizer, tokens: PairTokens, batches: list[Batch], args) -> dict:
    variants = {k: v for k, v in VARIANTS.items() if k in args.variants}
    if not varlen_available() and args.device.startswith("cuda"):
        variants = {k: v for k, v in variants.items() if not v[0]}  # no varlen kernel: padded only
    steppers, models = {}, {}
    for name, (packing, pretokenized, compile_model) in variants.items():
        model = models[name] = build_model(tokenizer, args, compile_model)

        def run(gated, callback, model=model, packing=packing, pretokenized=pretokenized):
            train(model, gated, steps=len(batches), lr=1e-5, mixed_precision="bf16", packing=packing,
                  max_padding=None, tokens=tokens if pretokenized else None, progress=False, callback=callback)

        steppers[name] = StepByStep(run, batches)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = interleave(steppers, args.steps, warmup=args.warmup, progress="train")
    measured = batches[args.warmup : args.warmup + args.steps]
    lengths = [[len(x) for x in tokens.ids(b.query_rows, "query") + tokens.ids(b.passage_rows, "passage")]
               for b in measured]
    useful = float(np.mean([sum(x) for x in lengths]))
    padded = float(np.mean([len(b) * (max(x[: len(b)]) + max(x[len(b):])) for b, x in zip(measured, lengths)]))
    config = next(iter(models.values())).encoder.config
    flops = float(np.mean([useful_flops(config, x) for x in lengths]))
    peak = peak_tflops(torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu")
    result = {"batch_size": args.batch_size, "useful_tokens_per_step": useful, "padded_tokens_per_step": padded,
              "padding_factor": padded / useful, "useful_tflops_per_step": flops / 1e12, "variants": {}}
    for name, step_s in times.items():
        median = spread(step_s)["median"]
        result["variants"][name] = {
            "step_s": spread(step_s), "useful_tokens_per_s": useful / median,
            "mfu_useful": flops / median / 1e12 / peak if peak else None,
            "speed_over_padded_tokenize": ratio(times["padded+tokenize"], step_s) if "padded+tokenize" in times else None,
        }
    if args.device.startswith("cuda"):
        result["peak_memory_gib_all_variants"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def measure_evaluation(tokenizer, data: dict, args) -> dict:
    model = build_model(tokenizer, args)
    queries, candidates = data["queries"], data["candidates"]
    if args.size == "tiny":
        queries, candidates = queries[:300], candidates[:300]
    out = {"queries": len(queries), "candidates": len(candidates), "batch_size": args.eval_batch_size}
    settings = {"padded fp32": dict(dtype="fp32"), "padded bf16": dict(dtype="bf16"),
                "packed bf16": dict(dtype="bf16", packed=True)}
    reference = None
    for name, kwargs in settings.items():
        if kwargs.get("packed") and args.device.startswith("cuda") and not varlen_available():
            out[name] = {"skipped": "no varlen attention kernel in this PyTorch"}
            continue
        model.encode(queries[:256], "query", batch_size=args.eval_batch_size, show_progress=False, **kwargs)  # warm-up
        embeddings = {}

        def encode():
            for role, texts in (("query", queries), ("passage", candidates)):
                embeddings[role] = model.encode(texts, role, batch_size=args.eval_batch_size, show_progress=False,
                                                **kwargs)

        out[name] = {"seconds": timed(encode, args.device)}
        if reference is None:
            reference = embeddings
        else:
            out[name]["max_abs_diff_vs_padded_fp32"] = max(
                float(np.abs(embeddings[r] - reference[r]).max()) for r in embeddings)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", type=Path, help="write the inputs into this folder and stop (run here)")
    ap.add_argument("--mmarco", type=Path, help="with --prepare: a local mMARCO copy (hub layout) to sample lengths from")
    ap.add_argument("--inputs", type=Path, default=Path("bench/_carry"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")) / "gpu.json")
    ap.add_argument("--size", choices=sorted(SHAPES), default="base", help="xlm-roberta-base or -large shape")
    ap.add_argument("--source", default="mlqa-r", help="pair source whose lengths the batches follow")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--eval-batch-size", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    if args.prepare:
        return prepare(args.prepare, args.mmarco)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures the GPU path (bench/speed.py is the CPU one)")
    args.variants = args.variants.split(",")
    from transformers import AutoTokenizer

    started = time.perf_counter()
    report: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                    "varlen_available": varlen_available()}

    def save(key: str, value) -> None:
        report[key] = value
        write_report(args.out, report)
        print(key, json.dumps(value), flush=True)

    tokenizer = AutoTokenizer.from_pretrained(args.inputs / "tokenizer")
    tokens, texts = load_pairs(args.inputs, args.source)
    batches = draw_batches(tokens, texts, args.batch_size, args.warmup + args.steps, seed=0)
    save(f"train {args.size} {args.source}", measure_training(tokenizer, tokens, batches, args))
    sync(args.device)
    if not args.skip_eval:
        with gzip.open(args.inputs / "xquad-r.json.gz", "rt", encoding="utf-8") as f:
            save(f"evaluation {args.size}", measure_evaluation(tokenizer, json.load(f), args))
    save("wall_s", time.perf_counter() - started)


if __name__ == "__main__":
    main()
