"""Speed of hybridlib against the plain sentence-transformers way, in one run on one machine.

Both paths get the same model weights, the same batches, batch size, max length, learning rate and
prompts, so the ratios measure the code paths only:

1. training: pairs/s over ``--steps`` steps after ``--warmup`` steps (MLQA-R cross batches drawn once
   and fed to both). Ours: ``hybridlib.train.train``. Theirs: ``SentenceTransformer`` +
   ``MultipleNegativesRankingLoss`` in a plain torch loop. Floor: forward + backward on the already
   tokenized batches (no tokenizer, no clipping, no optimizer). Plus AdamW step time alone (for-loop,
   foreach, fused) and gradient clipping time, so the step can be decomposed.
2. evaluation on XQuAD-R: ours = ``BiEncoder.encode`` + ``evaluate_embeddings`` (all settings);
   theirs = ``SentenceTransformer.encode`` + a plain numpy pooled mAP over the full score matrix.
   Floor: the encoder forward alone on the same tokens and batches. The two pooled mAPs must agree.
3. metrics alone: ``evaluate_embeddings`` on the full embeddings.

Run from the repository root::

    HYBRIDLIB_DATA_DIR=/work/shared/data HF_HUB_OFFLINE=1 python bench/speed.py [--quick] [--profile]

Prints one line per ratio and writes a JSON report (``--out``, default /tmp/hybridlib-speed.json).
A ratio "ours/theirs" is a speed ratio (our throughput over theirs; > 1 means ours is faster). Other
work on the machine makes timings drift: each phase prints the load average and flags a busy machine.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hybridlib.data import load_benchmark, pairs_from_benchmark
from hybridlib.embedded import EMBEDDED_NAME, convert_embedded_model
from hybridlib.loss import InfoNCELoss
from hybridlib.metrics import evaluate_embeddings
from hybridlib.model import load_model, tiny_model
from hybridlib.sampler import HybridBatchSampler
from hybridlib.train import make_optimizer, train

QUERY_PROMPT, PASSAGE_PROMPT = "query: ", "passage: "
LOAD_LOG: list[float] = []  # 1-minute load average after each timed phase (goes into the report)


def say(*parts) -> None:
    print(*parts, flush=True)


# ---------------------------------------------------------------------------------------- setup


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=EMBEDDED_NAME, help="model name or folder (default: the embedded e5-small)")
    ap.add_argument("--steps", type=int, default=10, help="measured training steps")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured warm-up steps before them")
    ap.add_argument("--batch-size", type=int, default=32, help="training batch size (pairs)")
    ap.add_argument("--eval-batch-size", type=int, default=64, help="encode batch size (both paths)")
    ap.add_argument("--max-length", type=int, default=128, help="max tokens for queries and passages (both paths)")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--temperature", type=float, default=0.05, help="ours; theirs gets scale = 1/temperature")
    ap.add_argument("--max-groups", type=int, default=None, help="XQuAD-R groups to evaluate on (default: all)")
    ap.add_argument("--train-max-groups", type=int, default=None, help="MLQA-R groups to draw batches from")
    ap.add_argument("--adamw-steps", type=int, default=5, help="timed AdamW steps per implementation")
    ap.add_argument("--skip", choices=["train", "eval"], action="append", default=[], help="skip a part")
    ap.add_argument("--profile", action="store_true", help="profile one training step and one encode of ours")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 steps, 20 groups (< 2 min)")
    ap.add_argument("--out", default="/tmp/hybridlib-speed.json", help="JSON report path")
    args = ap.parse_args(argv)
    if args.profile and args.warmup < 1:
        ap.error("--profile profiles the first step after the warm-up: use --warmup >= 1")
    if args.quick:
        args.steps, args.warmup, args.adamw_steps = 2, 1, 2
        args.max_groups = args.max_groups or 20
        args.train_max_groups = args.train_max_groups or 200
    return args


def machine() -> dict:
    """CPU model, core counts, torch threads and load: what the timings depend on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sentence_transformers
    import transformers

    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }


def model_folder(args, tmp: Path) -> Path:
    """A folder both libraries load: the converted embedded model, or a saved tiny model (--quick)."""
    if args.quick:
        return tiny_model(max_position=max(128, args.max_length)).save(tmp / "tiny")
    if args.model == EMBEDDED_NAME:
        return convert_embedded_model()
    return Path(args.model)


def load_ours(folder: Path, args):
    """A fresh BiEncoder with one max length for both roles (sentence-transformers has only one)."""
    return load_model(folder, query_max_length=args.max_length, passage_max_length=args.max_length)


def load_theirs(folder: Path, args):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = args.max_length
    return model


def st_features(model, texts: list[str]) -> dict:
    """Tokenized features the sentence-transformers way (``preprocess``; ``tokenize`` before 5.x)."""
    fn = getattr(model, "preprocess", None) or model.tokenize
    return fn(texts)


def load_note() -> str:
    """The 1-minute load average, flagged when other work competes for the cores (timings then drift).

    This run itself keeps about one runnable thread per core, so only a load clearly above the core
    count means someone else is computing too.
    """
    load = os.getloadavg()[0]
    LOAD_LOG.append(load)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return f"load {load:.2f}" + (" BUSY: timings unreliable" if load > cpus + 0.75 else "")


def summary(times: list[float], items_per_call: int | None = None) -> dict:
    out = {"n": len(times), "total_s": sum(times), "median_s": statistics.median(times) if times else math.nan,
           "min_s": min(times, default=math.nan), "max_s": max(times, default=math.nan)}
    if items_per_call is not None and times:
        out["items_per_s"] = items_per_call * len(times) / sum(times)
    return out


# -------------------------------------------------------------------------------------- training


def draw_batches(args) -> list:
    """The training batches, drawn once: every path sees exactly this list."""
    bench = load_benchmark("mlqa-r", max_groups=args.train_max_groups)
    sampler = HybridBatchSampler(pairs_from_benchmark(bench), args.batch_size, ratios={"cross": 1.0}, seed=0)
    return [sampler.next_batch() for _ in range(args.warmup + args.steps)]


def train_ours(folder: Path, batches: list, args, profile: bool = False, max_padding="auto") -> dict:
    """hybridlib.train.train; step time = interval between consecutive callbacks (all loop overhead in)."""
    model = load_ours(folder, args)
    stamps = [time.perf_counter()]
    profilers = {}

    def on_step(step: int, record: dict) -> None:
        stamps.append(time.perf_counter())
        if profile and step == args.warmup:  # profile exactly the first measured step
            profilers["torch"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            profilers["torch"].__enter__()
            profilers["py"] = cProfile.Profile()
            profilers["py"].enable()
        elif profile and step == args.warmup + 1:
            profilers["py"].disable()
            profilers["torch"].__exit__(None, None, None)
        stamps[-1] = time.perf_counter()  # do not charge the profiler start to the next step

    records = train(
        model, iter(batches), steps=len(batches), lr=args.lr, weight_decay=args.weight_decay,
        max_grad_norm=1.0, temperature=args.temperature, mixed_precision="no", progress=False, seed=0,
        callback=on_step, max_padding=max_padding,
    )
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    result = {
        "step_s": steps,
        "record_s": [r["seconds"] for r in records],
        "losses": [r["loss"] for r in records],
        "measured": summary(steps[args.warmup :], args.batch_size),
    }
    result["pairs_per_s"] = result["measured"]["items_per_s"]
    if profile:
        result["profile"] = profile_tables(profilers["torch"], profilers["py"])
    return result


def train_theirs(folder: Path, batches: list, args) -> dict:
    """The sentence-transformers way: MultipleNegativesRankingLoss in a plain torch loop."""
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    model = load_theirs(folder, args)
    loss_fn = MultipleNegativesRankingLoss(model, scale=1.0 / args.temperature)
    # Hugging Face Trainer convention: no weight decay on biases and LayerNorm parameters
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if "bias" in name or "norm" in name.lower() or param.ndim < 2 else decay).append(param)
    # fused=True: what SentenceTransformerTrainer gets by default (TrainingArguments.optim is
    # "adamw_torch_fused" for torch >= 2.8), so both paths run the same optimizer kernel
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, fused=True,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, len(batches))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.manual_seed(0)
    model.train()
    steps, losses = [], []
    batch_iter = iter(batches)
    for _ in range(len(batches)):
        started = time.perf_counter()
        batch = next(batch_iter)
        queries = st_features(model, [QUERY_PROMPT + t for t in batch.queries])
        passages = st_features(model, [PASSAGE_PROMPT + t for t in batch.passages])
        loss = loss_fn([queries, passages], None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        steps.append(time.perf_counter() - started)
    model.eval()
    result = {"step_s": steps, "losses": losses, "measured": summary(steps[args.warmup :], args.batch_size)}
    result["pairs_per_s"] = result["measured"]["items_per_s"]
    return result


def same_tokens(folder: Path, batches: list, args) -> bool:
    """Whether both libraries turn the first batch into identical input ids (they should)."""
    ours, theirs = load_ours(folder, args), load_theirs(folder, args)
    same = True
    first = batches[0]
    for role, prompt, texts in (("query", QUERY_PROMPT, first.queries), ("passage", PASSAGE_PROMPT, first.passages)):
        a = ours.tokenize(texts, role)["input_ids"]
        b = st_features(theirs, [prompt + t for t in texts])["input_ids"]
        same &= a.shape == b.shape and bool(torch.equal(a, b))
    return same


def train_floor(folder: Path, batches: list, args) -> dict:
    """Forward + backward alone on pre-tokenized batches; also tokenizer, clipping and AdamW step times."""
    model = load_ours(folder, args)
    loss_fn = InfoNCELoss(args.temperature)
    tokenize_s, tokens = [], []
    for batch in batches:
        started = time.perf_counter()
        tokens.append((model.tokenize(batch.queries, "query"), model.tokenize(batch.passages, "passage")))
        tokenize_s.append(time.perf_counter() - started)
    torch.manual_seed(0)
    model.train()
    fwd_bwd = []
    for q, p in tokens:
        started = time.perf_counter()
        out = loss_fn(model(q), model(p))
        model.zero_grad(set_to_none=True)
        out.loss.backward()
        fwd_bwd.append(time.perf_counter() - started)
    # the same forward + backward on length-sorted sub-batches (what train() does on CPU): the floor
    # for a path that pads each sub-batch only to its own longest text
    bucketed = []
    for batch in batches:
        started = time.perf_counter()
        q = model.embed(batch.queries, "query", max_padding=0.25)
        p = model.embed(batch.passages, "passage", max_padding=0.25)
        out = loss_fn(q, p)
        model.zero_grad(set_to_none=True)
        out.loss.backward()
        bucketed.append(time.perf_counter() - started)
    real_tokens = [
        sum(len(x) for x in model.tokenizer([prompt + t for t in texts], truncation=True, max_length=args.max_length)["input_ids"])
        for batch in batches
        for prompt, texts in ((QUERY_PROMPT, batch.queries), (PASSAGE_PROMPT, batch.passages))
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    clip = []
    for _ in range(3):
        started = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        clip.append(time.perf_counter() - started)
    result = {
        "tokenize": summary(tokenize_s[args.warmup :]),
        "forward_backward": summary(fwd_bwd[args.warmup :], args.batch_size),
        "forward_backward_bucketed": summary(bucketed[args.warmup :], args.batch_size),
        "padded_over_real_tokens": sum(args.batch_size * (q["input_ids"].shape[1] + p["input_ids"].shape[1])
                                       for q, p in tokens) / sum(real_tokens),
        "clip_grad_norm": summary(clip),
        "adamw": adamw_timings(model, args),
        "shapes": {"query_tokens": [int(q["input_ids"].shape[1]) for q, _ in tokens],
                   "passage_tokens": [int(p["input_ids"].shape[1]) for _, p in tokens]},
        "parameters": sum(p.numel() for p in params),
        "embedding_parameters": model.encoder.get_input_embeddings().weight.numel(),
    }
    result["pairs_per_s"] = result["forward_backward"]["items_per_s"]
    return result


def adamw_timings(model, args) -> dict:
    """AdamW step alone over the model's real gradients: default (what make_optimizer builds), foreach, fused.

    Each variant starts from the same parameters and gradients; the max |difference| of the updated
    parameters against the default implementation tells whether switching would change numbers.
    """
    reference_opt = make_optimizer(model, args.lr, args.weight_decay)
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in reference_opt.param_groups]
    params = [p for g in groups for p in g["params"]]
    start = [p.detach().clone() for p in params]
    variants = {"make_optimizer default": None, "foreach": {"foreach": True}, "fused": {"fused": True}}
    out, reference = {"make_optimizer_defaults": _flags(reference_opt)}, None
    for name, flags in variants.items():
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        try:
            opt = reference_opt if flags is None else torch.optim.AdamW(groups, lr=args.lr, **flags)
        except (RuntimeError, ValueError, TypeError) as err:
            out[name] = {"error": f"{type(err).__name__}: {err}"}
            continue
        times = []
        for _ in range(1 + args.adamw_steps):  # the first step also allocates the moment buffers
            started = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - started)
        result = {"first_step_s": times[0], **summary(times[1:])}
        with torch.no_grad():
            if reference is None:
                reference = [p.detach().clone() for p in params]
            else:
                result["max_abs_diff_vs_default"] = max(float((p - r).abs().max()) for p, r in zip(params, reference))
        out[name] = result
        del opt
        gc.collect()
    with torch.no_grad():
        for p, s in zip(params, start):
            p.copy_(s)
    return out


def _flags(opt: torch.optim.Optimizer) -> dict:
    return {k: opt.defaults.get(k) for k in ("foreach", "fused")}


# ------------------------------------------------------------------------------------ evaluation


def pooled_map_numpy(benchmark, queries: np.ndarray, candidates: np.ndarray, block: int = 512) -> float:
    """Pooled-corpus mAP the straightforward way: full score rows, argsort, rank of each relevant item.

    Ties go to the lower candidate index (stable sort), as in hybridlib.metrics. The mean is taken
    per query language, then over languages (the benchmark's aggregation).
    """
    position = {cid: i for i, cid in enumerate(benchmark.candidates["id"])}
    query_ids, langs = list(benchmark.queries["id"]), list(benchmark.queries["lang"])
    n_candidates = len(candidates)
    ap = np.empty(len(query_ids))
    for start in range(0, len(query_ids), block):
        scores = queries[start : start + block] @ candidates.T
        order = np.argsort(-scores, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.broadcast_to(np.arange(1, n_candidates + 1), order.shape), axis=1)
        for i in range(len(scores)):
            relevant = [position[c] for c in benchmark.relevant[query_ids[start + i]]]
            r = np.sort(ranks[i, relevant])
            ap[start + i] = np.mean(np.arange(1, len(r) + 1) / r)
    langs = np.asarray(langs)
    return float(np.mean([ap[langs == lang].mean() for lang in sorted(set(langs))]))


def eval_ours(folder: Path, benchmark, args, queries: list[str], candidates: list[str]) -> dict:
    model = load_ours(folder, args)
    model.encode(candidates[: args.eval_batch_size], "passage", batch_size=args.eval_batch_size, show_progress=False)
    t0 = time.perf_counter()  # after one untimed warm-up batch, as for theirs and the floor
    q = model.encode(queries, "query", batch_size=args.eval_batch_size, show_progress=False)
    t1 = time.perf_counter()
    c = model.encode(candidates, "passage", batch_size=args.eval_batch_size, show_progress=False)
    t2 = time.perf_counter()
    report = evaluate_embeddings(benchmark, q, c)
    t3 = time.perf_counter()
    return {"encode_queries_s": t1 - t0, "encode_candidates_s": t2 - t1, "encode_s": t2 - t0, "metrics_s": t3 - t2,
            "total_s": t3 - t0, "pooled_map": report["map"]["multi"], "map": report["map"], "q": q, "c": c}


def eval_theirs(folder: Path, benchmark, args, queries: list[str], candidates: list[str]) -> dict:
    model = load_theirs(folder, args)
    common = {"batch_size": args.eval_batch_size, "normalize_embeddings": True, "convert_to_numpy": True,
              "show_progress_bar": False}
    model.encode(candidates[: args.eval_batch_size], prompt=PASSAGE_PROMPT, **common)  # warm-up
    t0 = time.perf_counter()
    q = model.encode(queries, prompt=QUERY_PROMPT, **common)
    t1 = time.perf_counter()
    c = model.encode(candidates, prompt=PASSAGE_PROMPT, **common)
    t2 = time.perf_counter()
    pooled = pooled_map_numpy(benchmark, q, c)
    t3 = time.perf_counter()
    return {"encode_queries_s": t1 - t0, "encode_candidates_s": t2 - t1, "encode_s": t2 - t0, "metrics_s": t3 - t2,
            "total_s": t3 - t0, "pooled_map": pooled, "q": np.asarray(q, dtype=np.float32),
            "c": np.asarray(c, dtype=np.float32)}


def eval_floor(folder: Path, args, queries: list[str], candidates: list[str]) -> dict:
    """Encoder forward alone (inference_mode) on the tokens and length-sorted batches ours uses."""
    model = load_ours(folder, args).eval()
    out, tokens_total = {}, 0
    with torch.inference_mode():  # warm-up
        model.encoder(**model.tokenize(candidates[: args.eval_batch_size], "passage"))
    for role, texts in (("query", queries), ("passage", candidates)):
        prefix = model.prefix(role)
        lengths = [len(ids) for ids in model.tokenizer([prefix + t for t in texts], truncation=True,
                                                        max_length=model.max_length(role))["input_ids"]]
        order = np.argsort(-np.asarray(lengths), kind="stable")
        batches = [model.tokenize([texts[i] for i in order[s : s + args.eval_batch_size]], role)
                   for s in range(0, len(texts), args.eval_batch_size)]
        tokens_total += sum(int(b["input_ids"].numel()) for b in batches)
        started = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                model.encoder(**batch)
        out[f"{role}_s"] = time.perf_counter() - started
        out[f"{role}_mean_length"] = float(np.mean(lengths))
    out["total_s"] = out["query_s"] + out["passage_s"]
    out["padded_tokens"] = tokens_total
    return out


# ------------------------------------------------------------------------------------- profiling


def profile_tables(torch_prof, py_prof, top: int = 15) -> dict:
    ops = torch_prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    buffer = io.StringIO()
    pstats.Stats(py_prof, stream=buffer).sort_stats("tottime").print_stats(top)
    text = buffer.getvalue()
    return {"torch_ops": ops, "python": text[text.find("ncalls") - 3 :] if "ncalls" in text else text}


def profile_encode(folder: Path, args, candidates: list[str], n: int = 1024) -> dict:
    model = load_ours(folder, args)
    texts = candidates[:n]
    model.encode(texts[: args.eval_batch_size], "passage", batch_size=args.eval_batch_size, show_progress=False)
    py = cProfile.Profile()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        py.enable()
        model.encode(texts, "passage", batch_size=args.eval_batch_size, show_progress=False)
        py.disable()
    return {"texts": len(texts), **profile_tables(prof, py)}


# ------------------------------------------------------------------------------------------ main


def run_training(folder: Path, args, report: dict) -> None:
    batches = draw_batches(args)
    say(f"\n== training: {args.warmup} warm-up + {args.steps} measured steps, batch {args.batch_size}, "
        f"MLQA-R cross, max_length {args.max_length}, lr {args.lr}, wd {args.weight_decay}")
    same = same_tokens(folder, batches, args)
    say(f"identical input ids for both paths (first batch): {same}")
    ours = train_ours(folder, batches, args)
    gc.collect()  # each phase loads its own fresh model: drop the previous one first
    say(f"ours   : {ours['pairs_per_s']:.2f} pairs/s (median step {ours['measured']['median_s']:.3f} s; "
        f"fastest {ours['measured']['min_s']:.3f} s) [{load_note()}]")
    padded = train_ours(folder, batches, args, max_padding=None)
    gc.collect()
    say(f"ours, one padded pass per side (max_padding=None): {padded['pairs_per_s']:.2f} pairs/s "
        f"(median step {padded['measured']['median_s']:.3f} s; fastest {padded['measured']['min_s']:.3f} s) "
        f"[{load_note()}]")
    theirs = train_theirs(folder, batches, args)
    gc.collect()
    say(f"theirs : {theirs['pairs_per_s']:.2f} pairs/s (median step {theirs['measured']['median_s']:.3f} s; "
        f"fastest {theirs['measured']['min_s']:.3f} s) [{load_note()}]")
    floor = train_floor(folder, batches, args)
    gc.collect()
    say(f"floor  : {floor['pairs_per_s']:.2f} pairs/s forward+backward only "
        f"(median {floor['forward_backward']['median_s']:.3f} s/step; "
        f"fastest {floor['forward_backward']['min_s']:.3f} s) "
        f"[{load_note()}]")
    say(f"floor  : {floor['forward_backward_bucketed']['items_per_s']:.2f} pairs/s forward+backward only on "
        f"length-sorted sub-batches (median {floor['forward_backward_bucketed']['median_s']:.3f} s/step); padding to the "
        f"longest text makes {floor['padded_over_real_tokens']:.2f}x the real tokens")
    say(f"losses step 1: ours {ours['losses'][0]:.5f} theirs {theirs['losses'][0]:.5f}; "
        f"last: ours {ours['losses'][-1]:.5f} theirs {theirs['losses'][-1]:.5f}")
    ratio = ours["pairs_per_s"] / theirs["pairs_per_s"]
    say(f"training ratio ours/theirs = {ratio:.2f} (goal >= 1.25)")
    say(f"training ratio from median steps = {theirs['measured']['median_s'] / ours['measured']['median_s']:.2f}, "
        f"from fastest steps = {theirs['measured']['min_s'] / ours['measured']['min_s']:.2f} (robust to load spikes)")
    say(f"training ours/floor = {ours['pairs_per_s'] / floor['pairs_per_s']:.2f} (padded floor), "
        f"{ours['pairs_per_s'] / floor['forward_backward_bucketed']['items_per_s']:.2f} (sub-batch floor); "
        f"theirs/floor = {theirs['pairs_per_s'] / floor['pairs_per_s']:.2f} (padded floor)")
    say(f"step breakdown (median s): tokenize {floor['tokenize']['median_s']:.4f}, forward+backward "
        f"{floor['forward_backward']['median_s']:.4f}, clip_grad_norm {floor['clip_grad_norm']['median_s']:.4f}, "
        f"AdamW (default) {floor['adamw']['make_optimizer default'].get('median_s', math.nan):.4f}; "
        f"ours step {ours['measured']['median_s']:.4f}, theirs step {theirs['measured']['median_s']:.4f}")
    say(f"parameters {floor['parameters']:,} (embedding table {floor['embedding_parameters']:,}); "
        f"make_optimizer flags {floor['adamw']['make_optimizer_defaults']}")
    for name in ("make_optimizer default", "foreach", "fused"):
        entry = floor["adamw"][name]
        if "error" in entry:
            say(f"AdamW {name:24s}: unavailable ({entry['error']})")
        else:
            diff = entry.get("max_abs_diff_vs_default")
            say(f"AdamW {name:24s}: median {entry['median_s']:.4f} s/step (first step {entry['first_step_s']:.4f} s)"
                + ("" if diff is None else f", max |param diff| vs default {diff:.3g}"))
    say(f"sub-batches vs one padded pass (ours) = {ours['pairs_per_s'] / padded['pairs_per_s']:.2f}")
    report["training"] = {"identical_input_ids": same, "ours": ours, "ours_one_padded_pass": padded,
                          "theirs": theirs, "floor": floor,
                          "ratio_ours_over_theirs": ratio}
    if args.profile:
        prof = train_ours(folder, batches[: args.warmup + 1], args, profile=True)["profile"]
        report["training"]["profile"] = prof
        say("\n-- profile: one of our training steps (torch ops by self CPU time) --")
        say(prof["torch_ops"])
        say("-- profile: one of our training steps (Python, cProfile by tottime) --")
        say(prof["python"])


def run_evaluation(folder: Path, args, report: dict) -> None:
    benchmark = load_benchmark("xquad-r", max_groups=args.max_groups)
    queries, candidates = list(benchmark.queries["text"]), list(benchmark.candidates["text"])
    say(f"\n== evaluation: XQuAD-R {len(benchmark.languages)} languages, {len(queries)} queries, "
        f"{len(candidates)} candidates, batch {args.eval_batch_size}, max_length {args.max_length}")
    ours = eval_ours(folder, benchmark, args, queries, candidates)
    gc.collect()
    say(f"ours   : encode {ours['encode_s']:.2f} s (queries {ours['encode_queries_s']:.2f}, candidates "
        f"{ours['encode_candidates_s']:.2f}) + metrics {ours['metrics_s']:.2f} s = {ours['total_s']:.2f} s "
        f"[{load_note()}]")
    theirs = eval_theirs(folder, benchmark, args, queries, candidates)
    gc.collect()
    say(f"theirs : encode {theirs['encode_s']:.2f} s (queries {theirs['encode_queries_s']:.2f}, candidates "
        f"{theirs['encode_candidates_s']:.2f}) + pooled mAP {theirs['metrics_s']:.2f} s = {theirs['total_s']:.2f} s "
        f"[{load_note()}]")
    floor = eval_floor(folder, args, queries, candidates)
    say(f"floor  : encoder forward {floor['total_s']:.2f} s (queries {floor['query_s']:.2f}, candidates "
        f"{floor['passage_s']:.2f}; {floor['padded_tokens']:,} padded tokens) [{load_note()}]")
    fl = floor["total_s"]
    say(f"floor/encode: ours {fl / ours['encode_s']:.2f}, theirs {fl / theirs['encode_s']:.2f}; "
        f"floor/total: ours {fl / ours['total_s']:.2f}, theirs {fl / theirs['total_s']:.2f}")
    check = pooled_map_numpy(benchmark, ours["q"], ours["c"])
    diff = abs(ours["pooled_map"] - theirs["pooled_map"])
    emb_diff = max(float(np.abs(ours["q"] - theirs["q"]).max()), float(np.abs(ours["c"] - theirs["c"]).max()))
    say(f"pooled mAP: ours {ours['pooled_map']:.6f}, theirs {theirs['pooled_map']:.6f}, |diff| {diff:.2e} "
        f"({'agree' if diff <= 1e-4 else 'DISAGREE'} to 1e-4); numpy pooled mAP on our embeddings {check:.6f}; "
        f"max |embedding diff| {emb_diff:.2e}")
    ratio = theirs["total_s"] / ours["total_s"]
    say(f"evaluation ratio ours/theirs = {ratio:.2f} (goal >= 2)")
    say(f"encode-only ratio ours/theirs = {theirs['encode_s'] / ours['encode_s']:.2f}")

    index_timer = time.perf_counter()
    evaluate_embeddings(benchmark, ours["q"], ours["c"])
    metrics_s = time.perf_counter() - index_timer
    say(f"metrics alone: evaluate_embeddings {metrics_s:.2f} s (goal < 5)")
    strip = lambda d: {k: v for k, v in d.items() if k not in ("q", "c")}  # noqa: E731
    report["evaluation"] = {
        "queries": len(queries), "candidates": len(candidates), "languages": benchmark.languages,
        "ours": strip(ours), "theirs": strip(theirs), "floor": floor, "ratio_ours_over_theirs": ratio,
        "pooled_map_abs_diff": diff, "pooled_map_agree_1e-4": diff <= 1e-4, "numpy_pooled_map_on_ours": check,
        "max_abs_embedding_diff": emb_diff,
    }
    report["metrics_alone_s"] = metrics_s
    if args.profile:
        prof = profile_encode(folder, args, candidates)
        report["evaluation"]["profile"] = prof
        say(f"\n-- profile: our encode of {prof['texts']} candidates (torch ops by self CPU time) --")
        say(prof["torch_ops"])
        say("-- profile: our encode (Python, cProfile by tottime) --")
        say(prof["python"])


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict = {"args": vars(args), "machine": machine()}
    m = report["machine"]
    say(f"machine: {m['host']}, {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
        f"torch threads {m['torch_threads']} (interop {m['torch_interop_threads']}), load {m['load_average_start']}")
    say(f"versions: python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"sentence-transformers {m['sentence_transformers']}")
    with tempfile.TemporaryDirectory(prefix="hybridlib-speed-") as tmp:
        folder = model_folder(args, Path(tmp))
        say(f"model: {'tiny_model (quick)' if args.quick else args.model} from {folder}")
        report["model_folder"] = str(folder)
        if "train" not in args.skip:
            run_training(folder, args, report)
        if "eval" not in args.skip:
            run_evaluation(folder, args, report)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["machine"]["load_after_each_phase"] = LOAD_LOG
    report["wall_s"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")
    say(f"\nwall time {report['wall_s']:.1f} s; report written to {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
