"""Speed of hybridlib against the sentence-transformers way of doing the same work, in one run on one machine.

Both get the same weights, batches, max length, learning rate and prompts, so the ratios measure the code
paths only. Every measurement has three cases, interleaved round by round (``bench/harness.py``):

1. training, one round = one fresh process per case, each taking the same MLQA-R cross batches (its median
   measured step counts): ours = steps of ``hybridlib.training.loop.train``; theirs = ``SentenceTransformer`` +
   ``MultipleNegativesRankingLoss`` + fused AdamW in a plain loop (what ``SentenceTransformerTrainer`` runs);
   floor = forward + backward alone on the length-sorted sub-batches ours embeds, tokenized beforehand (no
   optimizer, no clipping).
2. evaluation on XQuAD-R, one round = one chunk of the texts: ours = ``BiEncoder.encode``; theirs =
   ``SentenceTransformer.encode``; floor = the encoder forward alone on our batches, tokenized beforehand.
   Then both embeddings are scored by ``hybridlib.evaluation.metrics.evaluate_embeddings`` (sentence-transformers has no
   LAReQA metrics; its side is charged the same scoring time).
3. metrics alone: ``evaluate_embeddings`` on our embeddings.

Checked in the same run, the run fails if not: both tokenizers give identical input ids; the two
evaluations' pooled mAP agree to 1e-4 and their embeddings to 1e-4.

    HYBRIDLIB_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 python bench/speed.py --out bench/results/cpu-speed.json

A ratio "ours/theirs" is a speed ratio (> 1: ours is faster): the median over rounds of the per-round ratio,
with its min and max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from bench.harness import StepByStep, interleave, machine, ratio, say, spread, table, write_report  # noqa: E402
from hybridlib.data.benchmarks import load_benchmark, pairs_from_benchmark
from hybridlib.models.embedded import EMBEDDED_NAME
from hybridlib.training.loss import InfoNCELoss
from hybridlib.evaluation.metrics import evaluate_embeddings
from hybridlib.models.bi_encoder import convert_embedded_model, load_model, tiny_model
from hybridlib.data.sampler import HybridBatchSampler
from hybridlib.data.tokens import PairTokens
from hybridlib.training.loop import train

PROMPTS = {"query": "query: ", "passage": "passage: "}
OPT_INS = {"compile": {"backend": "compile"}, "bf16": {"dtype": "bf16"}}  # BiEncoder.encode options compared too


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=EMBEDDED_NAME, help="model name or folder (default: the embedded e5-small)")
    ap.add_argument("--rounds", type=int, default=3, help="training rounds: one process per case and round")
    ap.add_argument("--steps", type=int, default=4, help="measured training steps per process")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up steps before them")
    ap.add_argument("--batch-size", type=int, default=32, help="training batch size (pairs)")
    ap.add_argument("--eval-batch-size", type=int, default=64, help="encode batch size (both paths)")
    ap.add_argument("--eval-chunks", type=int, default=6, help="evaluation rounds per role (texts split in chunks)")
    ap.add_argument("--max-length", type=int, default=128, help="max tokens for queries and passages (both paths)")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--temperature", type=float, default=0.05, help="ours; theirs gets scale = 1/temperature")
    ap.add_argument("--max-groups", type=int, default=None, help="XQuAD-R groups to evaluate on (default: all)")
    ap.add_argument("--train-max-groups", type=int, default=None, help="MLQA-R groups to draw batches from")
    ap.add_argument("--skip", choices=["train", "eval"], action="append", default=[], help="skip a part")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 steps, 20 groups (< 2 min)")
    ap.add_argument("--out", default="/tmp/hybridlib-speed.json", help="JSON report path")
    ap.add_argument("--train-case", choices=TRAIN_CASES, help=argparse.SUPPRESS)  # a child process
    ap.add_argument("--folder", help=argparse.SUPPRESS)  # the child's model folder
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup, args.eval_chunks = 2, 2, 1, 2
        args.max_groups = args.max_groups or 20
        args.train_max_groups = args.train_max_groups or 200
    return args


def model_folder(args, tmp: Path) -> Path:
    """A folder both libraries load: the converted embedded model, or a saved tiny model (--quick)."""
    if args.quick:
        return tiny_model(max_position=max(128, args.max_length)).save(tmp / "tiny")
    return convert_embedded_model() if args.model == EMBEDDED_NAME else Path(args.model)


def load_ours(folder: Path, args):
    """A fresh BiEncoder with one max length for both roles (sentence-transformers has only one)."""
    return load_model(folder, query_max_length=args.max_length, passage_max_length=args.max_length)


def load_theirs(folder: Path, args):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = args.max_length
    return model


def their_features(model, texts: list[str], role: str) -> dict:
    """Tokenized features the sentence-transformers way (``preprocess``; ``tokenize`` before 5.x)."""
    return (getattr(model, "preprocess", None) or model.tokenize)([PROMPTS[role] + t for t in texts])


# -------------------------------------------------------------------------------------- training


def ours_training(folder: Path, pairs, batches: list, args, losses: list) -> StepByStep:
    """A step of ``train`` as a run makes it: on the pair table's token ids, prepared once (``PairTokens``)."""
    model = load_ours(folder, args)
    tokens = PairTokens.build(pairs, model, cache=False)

    def run(gated_batches, callback):
        def on_step(step, record):
            losses.append(record["loss"])
            callback(step, record)

        train(model, gated_batches, steps=len(batches), lr=args.lr, weight_decay=args.weight_decay,
              max_grad_norm=1.0, loss_fn=InfoNCELoss(args.temperature), mixed_precision="no", progress=False,
              tokens=tokens, seed=0, callback=on_step)

    return StepByStep(run, batches)


def their_training(folder: Path, batches: list, args, losses: list):
    """The sentence-transformers way: MultipleNegativesRankingLoss in a plain torch loop, one step per next()."""
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    from transformers import get_linear_schedule_with_warmup

    model = load_theirs(folder, args)
    loss_fn = MultipleNegativesRankingLoss(model, scale=1.0 / args.temperature)
    decay, no_decay = [], []  # Hugging Face Trainer convention: no weight decay on biases and norms
    for name, param in model.named_parameters():
        (no_decay if "bias" in name or "norm" in name.lower() or param.ndim < 2 else decay).append(param)
    # fused: what SentenceTransformerTrainer uses by default (optim "adamw_torch_fused" for torch >= 2.8)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, len(batches))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.manual_seed(0)
    model.train()
    for batch in batches:
        started = time.perf_counter()
        loss = loss_fn([their_features(model, batch.queries, "query"),
                        their_features(model, batch.passages, "passage")], None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        yield time.perf_counter() - started


def floor_training(folder: Path, batches: list, args):
    """Forward + backward alone on the sub-batches ours embeds (max_padding 0.25), tokenized beforehand."""
    model = load_ours(folder, args).train()
    loss_fn = InfoNCELoss(args.temperature)
    ids = [(model.token_ids(b.queries, "query"), model.token_ids(b.passages, "passage")) for b in batches]
    torch.manual_seed(0)
    for queries, passages in ids:
        started = time.perf_counter()
        out = loss_fn(model.embed_ids(queries, max_padding=0.25), model.embed_ids(passages, max_padding=0.25))
        model.zero_grad(set_to_none=True)
        out.loss.backward()
        yield time.perf_counter() - started


def identical_input_ids(folder: Path, texts_by_role: dict[str, list[str]], args) -> bool:
    ours, theirs = load_ours(folder, args), load_theirs(folder, args)
    return all(torch.equal(ours.tokenize(texts, role)["input_ids"], their_features(theirs, texts, role)["input_ids"])
               for role, texts in texts_by_role.items())


# Each training case runs in processes of its own, one per round: one model per process keeps the cases from
# sharing the allocator, caches and thread pools (an in-process harness made them look alike).
TRAIN_CASES = ("ours", "theirs", "floor")


def training_batches(args) -> tuple:
    pairs = pairs_from_benchmark(load_benchmark("mlqa-r", max_groups=args.train_max_groups))
    sampler = HybridBatchSampler(pairs, args.batch_size, ratios={"cross": 1.0}, seed=0)
    return pairs, [next(sampler) for _ in range(args.warmup + args.steps)]


def train_child(args) -> int:
    """One process of one training case: warm-up + measured steps; step times and losses as JSON on stdout."""
    folder = Path(args.folder)
    pairs, batches = training_batches(args)
    losses: list = []
    case = {"ours": lambda: ours_training(folder, pairs, batches, args, losses),
            "theirs": lambda: their_training(folder, batches, args, losses),
            "floor": lambda: floor_training(folder, batches, args)}[args.train_case]()
    times = [next(case) for _ in batches][args.warmup:]
    if isinstance(case, StepByStep):
        case.join()  # let train() return: a process exiting under a running torch thread aborts
    print("RESULT " + json.dumps({"step_s": times, "losses": losses}), flush=True)
    return 0


def run_training(folder: Path, args, report: dict) -> list[dict]:
    _, batches = training_batches(args)
    say(f"\n== training: {args.rounds} rounds, each case in a process of its own per round ({args.warmup} warm-up + "
        f"{args.steps} measured steps, their median), batch {args.batch_size}, MLQA-R cross, max_length "
        f"{args.max_length}, lr {args.lr}, weight decay {args.weight_decay}")
    same = identical_input_ids(folder, {"query": batches[0].queries, "passage": batches[0].passages}, args)
    command = [sys.executable, str(Path(__file__).resolve()), "--folder", str(folder), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--max-length",
               str(args.max_length), "--lr", str(args.lr), "--weight-decay", str(args.weight_decay),
               "--temperature", str(args.temperature)]
    if args.train_max_groups:
        command += ["--train-max-groups", str(args.train_max_groups)]
    results: dict[str, list[dict]] = {name: [] for name in TRAIN_CASES}

    def process_of(name: str):
        while True:  # one round: a fresh process, its median measured step
            done = subprocess.run([*command, "--train-case", name], capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                raise RuntimeError(f"training case {name!r} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            results[name].append(json.loads(line[len("RESULT "):]))
            yield statistics.median(results[name][-1]["step_s"])

    times = interleave({name: process_of(name) for name in TRAIN_CASES}, args.rounds, progress="training")
    losses = {name: results[name][0]["losses"] for name in ("ours", "theirs")}
    result = {"identical_input_ids": same, "step_s": times, "losses": losses,
              "steps_per_process": {name: [r["step_s"] for r in runs] for name, runs in results.items()},
              "steps": {name: spread(t) for name, t in times.items()},
              "ratio_ours_over_theirs": ratio(times["theirs"], times["ours"]),
              "ratio_ours_over_floor": ratio(times["floor"], times["ours"])}
    report["training"] = result
    say(f"losses, first and last step: ours {losses['ours'][0]:.4f} {losses['ours'][-1]:.4f}; theirs "
        f"{losses['theirs'][0]:.4f} {losses['theirs'][-1]:.4f} (dropout draws differ)")
    r = result["ratio_ours_over_theirs"]
    say(f"training ratio ours/theirs = {r['median']:.2f} (rounds {r['min']:.2f}-{r['max']:.2f})")
    pairs_per_s = {name: args.batch_size / s["median"] for name, s in result["steps"].items()}
    return [{"measurement": "training (pairs/s)", "ours": f"{pairs_per_s['ours']:.2f}",
             "theirs": f"{pairs_per_s['theirs']:.2f}", "floor": f"{pairs_per_s['floor']:.2f}",
             "ours/theirs": f"{r['median']:.2f} [{r['min']:.2f}, {r['max']:.2f}]",
             "ours/floor": f"{result['ratio_ours_over_floor']['median']:.2f}"}]


# ------------------------------------------------------------------------------------ evaluation


def chunked(texts: dict[str, list[str]], chunks: int) -> list[tuple[str, slice]]:
    """The evaluation rounds: (role, rows) for ``chunks`` contiguous chunks of each role's texts."""
    work = []
    for role, items in texts.items():
        size = -(-len(items) // chunks)
        work += [(role, slice(start, min(start + size, len(items)))) for start in range(0, len(items), size)]
    return work


def timed_encode(encode, texts: dict[str, list[str]], out: dict):
    """A round: ``encode(texts, role)`` on one chunk, its embeddings kept in ``out[role]``; returns seconds."""
    def step(role: str, rows: slice) -> float:
        started = time.perf_counter()
        embeddings = np.asarray(encode(texts[role][rows], role), dtype=np.float32)
        out.setdefault(role, []).append(embeddings)
        return time.perf_counter() - started
    return step


def floor_encode(model, texts: dict[str, list[str]], batch_size: int):
    """A round of the floor: the encoder forward alone on our inference batches, tokenized before the clock."""
    def step(role: str, rows: slice) -> float:
        ids = model.token_ids(texts[role][rows], role)
        batches = [model.collate(chunk) for _, chunk in model.encode_batches(ids, batch_size)]
        started = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                model.encoder(**batch)
        return time.perf_counter() - started
    return step


def run_evaluation(folder: Path, args, report: dict) -> list[dict]:
    benchmark = load_benchmark("xquad-r", max_groups=args.max_groups)
    texts = {"query": list(benchmark.queries["text"]), "passage": list(benchmark.candidates["text"])}
    say(f"\n== evaluation: XQuAD-R, {len(benchmark.languages)} languages, {len(texts['query'])} queries, "
        f"{len(texts['passage'])} candidates, batch {args.eval_batch_size}, max_length {args.max_length}, "
        f"{args.eval_chunks} chunks per role")
    same = identical_input_ids(folder, {role: items[:200] for role, items in texts.items()}, args)
    theirs = load_theirs(folder, args)
    embeddings = {name: {} for name in ("ours", "theirs", *OPT_INS)}

    def ours_encode(**options):
        model = load_ours(folder, args)
        return lambda t, role: model.encode(t, role, batch_size=args.eval_batch_size, show_progress=False, **options)

    encoders = {"ours": ours_encode(),
                "theirs": lambda t, role: theirs.encode(t, prompt=PROMPTS[role], batch_size=args.eval_batch_size,
                                                        normalize_embeddings=True, show_progress_bar=False),
                **{name: ours_encode(**options) for name, options in OPT_INS.items()}}
    first_call = {}
    for name, encode in encoders.items():  # warm-up outside the rounds: compiling happens here, timed apart
        started = time.perf_counter()
        encode(texts["passage"][:64], "passage")
        first_call[name] = time.perf_counter() - started
    steps = {name: timed_encode(encode, texts, embeddings[name]) for name, encode in encoders.items()}
    steps["floor"] = floor_encode(load_ours(folder, args).eval(), texts, args.eval_batch_size)
    work = chunked(texts, args.eval_chunks)
    times = interleave({name: map(step, *zip(*work)) for name, step in steps.items()}, len(work),
                       progress="evaluation")
    q = {name: np.concatenate(e["query"]) for name, e in embeddings.items()}
    c = {name: np.concatenate(e["passage"]) for name, e in embeddings.items()}
    metrics_s = []
    for _ in range(3):  # metrics alone: the median of three
        started = time.perf_counter()
        evaluate_embeddings(benchmark, q["ours"], c["ours"])
        metrics_s.append(time.perf_counter() - started)
    metrics = spread(metrics_s)["median"]
    pooled = {name: evaluate_embeddings(benchmark, q[name], c[name]).report["map"]["multi"] for name in q}
    diff = {name: max(float(np.abs(q[name] - q["ours"]).max()), float(np.abs(c[name] - c["ours"]).max()))
            for name in q}
    totals = {name: sum(t) + metrics for name, t in times.items() if name != "floor"}
    result = {
        "identical_input_ids": same, "queries": len(texts["query"]), "candidates": len(texts["passage"]),
        "chunk_s": times, "first_call_s": first_call, "total_s": totals, "floor_forward_s": sum(times["floor"]),
        "metrics_s": metrics_s, "pooled_map": pooled, "max_abs_embedding_diff_vs_ours": diff,
        "pooled_map_abs_diff": abs(pooled["ours"] - pooled["theirs"]), "max_abs_embedding_diff": diff["theirs"],
        "ratio_ours_over_theirs": totals["theirs"] / totals["ours"],
        "encode_ratio_per_chunk": ratio(times["theirs"], times["ours"]),
        "ours_over_floor": sum(times["floor"]) / sum(times["ours"]),
        "opt_ins": {name: {"ratio_over_theirs": totals["theirs"] / totals[name],
                           "ratio_over_theirs_with_first_call": totals["theirs"] / (totals[name] + first_call[name]),
                           "ratio_over_ours_per_chunk": ratio(times["ours"], times[name]),
                           "pooled_map_change": pooled[name] - pooled["ours"]} for name in OPT_INS},
    }
    report["evaluation"] = result
    report["metrics_alone_s"] = metrics
    per_chunk = result["encode_ratio_per_chunk"]
    say("pooled mAP: " + ", ".join(f"{name} {value:.6f}" for name, value in pooled.items())
        + "; max |embedding diff| vs ours: " + ", ".join(f"{n} {d:.1e}" for n, d in diff.items() if n != "ours"))
    say(f"evaluation ratio ours/theirs = {result['ratio_ours_over_theirs']:.2f} (encode per chunk "
        f"{per_chunk['median']:.2f}, {per_chunk['min']:.2f}-{per_chunk['max']:.2f})")
    say(f"metrics alone: evaluate_embeddings {metrics:.2f} s (median of 3)")
    rows = [{"measurement": "evaluation (s: encode + metrics)", "ours": f"{totals['ours']:.1f}",
             "theirs": f"{totals['theirs']:.1f}", "floor": f"{result['floor_forward_s']:.1f} (forward only)",
             "ours/theirs": f"{result['ratio_ours_over_theirs']:.2f} (chunks {per_chunk['min']:.2f}-{per_chunk['max']:.2f})",
             "ours/floor": f"{result['ours_over_floor']:.2f}"}]
    for name, opt in result["opt_ins"].items():
        over_ours = opt["ratio_over_ours_per_chunk"]
        rows.append({"measurement": f"evaluation, {name} (opt-in)", "ours": f"{totals[name]:.1f} "
                     f"(+{first_call[name]:.0f} first call)", "theirs": f"{totals['theirs']:.1f}",
                     "ours/theirs": f"{opt['ratio_over_theirs']:.2f} ({opt['ratio_over_theirs_with_first_call']:.2f} "
                     f"with first call); {over_ours['median']:.2f}x eager", "floor": f"pooled mAP "
                     f"{opt['pooled_map_change']:+.1e}"})
    rows.append({"measurement": "metrics alone (s)", "ours": f"{metrics:.2f}"})
    return rows


def checks(report: dict) -> list[str]:
    """The correctness conditions of the comparison; each failure as a line."""
    failed = []
    for part in ("training", "evaluation"):
        if part in report and not report[part]["identical_input_ids"]:
            failed.append(f"{part}: the two tokenizations differ")
    evaluation = report.get("evaluation")
    if evaluation and evaluation["pooled_map_abs_diff"] > 1e-4:
        failed.append(f"pooled mAP differs by {evaluation['pooled_map_abs_diff']:.2e} (> 1e-4)")
    if evaluation and evaluation["max_abs_embedding_diff"] > 1e-4:
        failed.append(f"embeddings differ by up to {evaluation['max_abs_embedding_diff']:.2e} (> 1e-4)")
    if evaluation and evaluation["max_abs_embedding_diff_vs_ours"]["compile"] > 1e-4:  # it promises the same numbers
        failed.append(f"compile embeddings differ by {evaluation['max_abs_embedding_diff_vs_ours']['compile']:.2e}")
    return failed


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.train_case:
        return train_child(args)
    started = time.perf_counter()
    report: dict = {"args": vars(args), "machine": machine()}
    m = report["machine"]
    say(f"machine: {m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX flags read'}), {m['logical_cpus']} logical "
        f"CPUs, torch {m['torch']} with {m['torch_threads']} threads, load {m['load_average_start']}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="hybridlib-speed-") as tmp:
        folder = model_folder(args, Path(tmp))
        if "train" not in args.skip:
            rows += run_training(folder, args, report)
        if "eval" not in args.skip:
            rows += run_evaluation(folder, args, report)
    report["failed_checks"] = checks(report)
    report["wall_s"] = time.perf_counter() - started
    write_report(args.out, report)
    say("\n" + table(rows, ["measurement", "ours", "theirs", "floor", "ours/theirs", "ours/floor"]))
    for line in report["failed_checks"]:
        say(f"CHECK FAILED: {line}")
    say(f"\nwall time {report['wall_s']:.0f} s; report written to {args.out}")
    return 1 if report["failed_checks"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
