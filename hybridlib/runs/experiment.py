"""One training run end to end, as the training notebook drives it: folder, data, model, evaluation, records.

Everything a run writes lands in ``<output_dir>/<run_name>/``:

- ``params.json``        the resolved parameters (written first; a folder holding other parameters is refused)
- ``steps.jsonl``        the training step log, one line per step, flushed as it goes
- ``training.png``       loss and in-batch accuracy per step, by batch kind
- ``metrics.json``       the contract with the analysis notebooks (see ``write_metrics``)
- ``per_query-<benchmark>.csv.gz``   per-query scores in every setting (for bias analysis and bootstrap tests;
                                     the pooled rows with each query's top-10 candidate ids and gold ranks)
- ``projection-<benchmark>.csv.gz``  a 2-D PCA projection of the candidate embeddings, for plots
- ``projection-lda-<benchmark>.csv.gz``  the 2-D linear discriminant projection (axes that separate languages)
- ``model/``             the fine-tuned model (ignored by git)
- ``checkpoint/``        the training state while a run is unfinished (ignored by git; removed at the end)
- ``checkpoint-best.pt`` the weights of the lowest validation loss so far, with ``validate_every`` (removed at the end)
- ``failure.json``       why a run stopped (e.g. a non-finite loss), when it did

A ``Run`` does it in five calls: ``Run(params)`` (checks, folder), ``load_data()``, ``load_model()``,
``train()``, ``evaluate()`` and ``finish()``. ``run_experiment`` makes them in a row (``python -m
hybridlib.experiment PARAMS.yaml``, torchrun); ``notebooks/02_train.ipynb`` makes the same calls, one per
cell, to show each result, so a run folder is the same however the run was started.

On several GPUs: ``torchrun --standalone --nproc_per_node=N -m hybridlib.experiment PARAMS.yaml`` (see
``hybridlib.training.distributed``). Every process loads the data and the model and trains on its slice of each
global batch of ``batch_size`` pairs (a multiple of N), with negatives from the whole global batch;
rank 0 alone writes the run folder and evaluates, while the other processes wait for it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ..cache import cache_dir
from ..data.benchmarks import NEGATIVE_COLUMNS, PAIR_COLUMNS, load_benchmark, load_pairs, pairs_from_benchmark
from ..data.pinned import BENCHMARKS
from ..data.sampler import HybridBatchSampler, MultiSourceSampler
from ..data.tokens import PairTokens
from ..data.task_data import TaskData
from ..evaluation.tasks import get_task
from ..models.bi_encoder import BiEncoder
from ..models.build import build_model
from ..parameters import PACKING_MODES, differing_params
from ..records import added_tasks, read_record, record_damage, set_aside, where_am_i, write_atomic
from ..training.checkpoint import CheckpointError, checkpoint_step
from ..training.distributed import barrier, init_from_env, is_main, long_wait_group, shutdown, world
from ..training.loop import best_weights_path, train, validation_loss
from ..training.loss import InfoNCELoss
from .config import ParameterError, load_yaml, ratios_of, resolve_params, train_sources

VALIDATION_SEED = 0  # the validation batches: the same for every run (and seed) of a sweep
PACKAGES = ("hybridlib", "torch", "transformers", "datasets", "faiss-cpu", "numpy", "pandas", "papermill")


def run_folder(params: dict) -> Path:
    return Path(params["output_dir"]) / params["run_name"]


def prepare_run_folder(params: dict, adding_tasks: bool = False) -> Path:
    """Create the run folder and record the parameters; refuse a folder that holds another run.

    A folder whose params.json or metrics.json cannot be read (truncated, say) is moved aside, kept, and the
    run starts over in a new folder: nothing in it can be trusted, not even its checkpoint.

    ``adding_tasks``: the folder holds a finished run that these parameters only add evaluation tasks to
    (``records.added_tasks``), which is not refused.

    First this process takes the folder's lock (``runlock.lock_run_folder``, held until the process ends): a
    folder that another process is running is refused with ``RunFolderBusy``, before anything is touched.
    """
    from .runlock import lock_run_folder

    folder = run_folder(params)
    lock_run_folder(folder)
    recorded = folder / "params.json"
    damage = record_damage(folder)
    if damage:
        print(f"warning: {damage}: moved {folder} aside to {set_aside(folder)}; the run starts over",
              file=sys.stderr, flush=True)
    if recorded.exists():
        old = read_record(recorded)
        changed = differing_params(old, params)
        if changed and not adding_tasks:
            raise ParameterError(
                f"{folder} already holds a run with other parameters (old, new): {changed}. "
                "Choose another run_name or output_dir, or delete that folder to replace the run."
            )
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(recorded, json.dumps(params, indent=2) + "\n")  # a run killed while recording leaves no half file
    return folder


def training_pairs(params: dict):
    """The pair table the run trains on: group, lang, query, passage (and, with ``negatives``, negative, passage_id,
    negative_id); with several train sources, one table of them all with a ``source`` column."""
    tables = {source: source_pairs(params, source) for source in train_sources(params)}
    if len(tables) == 1:
        return next(iter(tables.values()))
    return _concatenate_sources(tables)


def source_pairs(params: dict, source: str):
    """One train source's pair table, with the negatives the ``negatives`` parameter asks for."""
    negatives = params["negatives"]
    if source in BENCHMARKS:
        bench = load_benchmark(source, languages=params["train_languages"], max_groups=params["train_max_groups"])
        return pairs_from_benchmark(bench, negatives=negatives == "mined")
    if source == "mmarco":
        from ..data.pair_sources import MMARCO_LANGUAGES, cached_mmarco_pairs

        languages = params["train_languages"] or sorted(MMARCO_LANGUAGES)
        mirror = os.environ.get("HYBRIDLIB_MMARCO_URL")  # a local copy with the hub's layout (offline machines)
        build = lambda: cached_mmarco_pairs(languages, params["train_max_groups"], cache_dir(),  # noqa: E731
                                            base_url=mirror, negatives=negatives == "source")
        if world()[1] > 1:  # stream once: rank 0 fills the cache, the others then read it
            pairs = build() if is_main() else None
            barrier(long_wait_group())  # streaming can outlast the collective timeouts
            return pairs if pairs is not None else build()
        return build()
    pairs = load_pairs(source)
    if params["train_languages"]:
        wanted = set(params["train_languages"])
        missing = wanted - set(pairs.unique("lang"))
        if missing:
            raise ParameterError(f"train_languages={params['train_languages']}: {sorted(missing)} absent from {source}")
        pairs = pairs.filter(lambda lang: lang in wanted, input_columns="lang")
    if negatives == "source" and "negative" not in pairs.column_names:
        raise ParameterError(f"negatives='source': the pair file {source} has no 'negative' column; add one (the hard "
                             "negative's text, in the passage's language) or use negatives='none'")
    return pairs if negatives == "source" else _without_negatives(pairs)


def _without_negatives(pairs):
    return pairs.remove_columns([column for column in NEGATIVE_COLUMNS if column in pairs.column_names])


def _concatenate_sources(tables: dict):
    """One table of several sources' pairs (same columns, missing ones empty) with a ``source`` column."""
    import datasets

    columns = [c for c in PAIR_COLUMNS + NEGATIVE_COLUMNS if any(c in t.column_names for t in tables.values())]
    features = datasets.Features({column: datasets.Value("string") for column in [*columns, "source"]})
    parts = []
    for name, table in tables.items():
        for column in columns:
            if column not in table.column_names:
                table = table.add_column(column, [None] * len(table))
        parts.append(table.select_columns(columns).add_column("source", [name] * len(table)).cast(features))
    return datasets.concatenate_datasets(parts)


def make_sampler(params: dict, pairs):
    """The run's sampler: a ``HybridBatchSampler``, or with several train sources a ``MultiSourceSampler``."""
    common = dict(mix=params["mix"], seed=params["seed"], language_weights=params["language_weights"])
    if "source" in pairs.column_names:
        return MultiSourceSampler(pairs, params["batch_size"], ratios_of(params), weights=params["source_weights"],
                                  **common)
    return HybridBatchSampler(pairs, params["batch_size"], ratios_of(params), name=params["train_source"], **common)


def validation_pairs(params: dict):
    """The validation source's pairs, with in-context negatives (benchmarks, SQuADShifts) or the file's own when
    the run trains with negatives. ``HYBRIDLIB_SQUADSHIFTS_URL``: a local copy of SQuADShifts in the hub's layout."""
    source, negatives = params["validation_source"], params["negatives"] != "none"
    if source == "squadshifts":
        from ..data.pair_sources import squadshifts_benchmark

        bench = squadshifts_benchmark(base_url=os.environ.get("HYBRIDLIB_SQUADSHIFTS_URL"))
        return pairs_from_benchmark(bench, negatives=negatives)
    if source in BENCHMARKS:
        return pairs_from_benchmark(load_benchmark(source), negatives=negatives)
    pairs = load_pairs(source)
    if params["loss_form"] == "paper" and "negative" not in pairs.column_names:
        raise ParameterError(f"loss_form='paper' needs hard negatives, and validation_source {source} has no "
                             "'negative' column; add one or use loss_form='batch'")
    return pairs if negatives else _without_negatives(pairs)


def make_validation(params: dict, model: BiEncoder, pairs, progress: bool = True):
    """``train``'s ``validate``: the loss over ``validation_batches`` fixed batches of ``pairs`` (seed
    ``VALIDATION_SEED``), with the training's batch-kind mix where the pairs allow it; from one language (English
    SQuADShifts) every validation batch is mono."""
    ratios = ratios_of(params)
    languages = sorted(set(pairs["lang"]))
    if len(languages) == 1:
        ratios = {"mono": 1.0}
        if progress and is_main():
            print(f"validation on {params['validation_source']}: one language ({languages[0]}), so every validation "
                  "batch is mono", flush=True)
    try:
        sampler = HybridBatchSampler(pairs, params["batch_size"], ratios, mix=params["mix"], seed=VALIDATION_SEED,
                                     language_weights=params["language_weights"], name=params["validation_source"])
    except ValueError as err:
        raise ParameterError(f"validation_source={params['validation_source']!r}: {err}") from None
    tokens = PairTokens.build(pairs, model)
    batches = [tokens.attach(next(sampler)) for _ in range(params["validation_batches"])]
    return validation_loss(model, make_loss(params, gather_across_ranks=False), batches, params["mixed_precision"],
                           PACKING_MODES[params["packing"]])


# Read while filling the caches but deciding nothing they hold (the tiny model's seed, a frozen embedding table).
_NOT_CACHED = ("seed", "freeze_embeddings", "device")


class _ReadParams(dict):
    """A run's parameters that remember which of them were read (iterating reads them all)."""

    def __init__(self, params: dict):
        super().__init__(params)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __iter__(self):
        self.read.update(super().keys())
        return super().__iter__()

    def items(self):
        self.read.update(super().keys())
        return super().items()


def warm_caches(runs: list[dict]) -> int:
    """Fill what the runs read from the shared caches, the way ``Run`` reads it (evaluation and training data, the
    converted model, the token ids of the training and validation tables), once per distinct set-up; returns how
    many set-ups were filled. A sweep calls it before runs start together, so they find the caches filled.

    The set-up of a run is what filling its caches read: a run whose values of all those parameters equal an
    earlier one's (``_NOT_CACHED`` aside) would read the same files, and is skipped."""
    filled: list[dict] = []
    for params in runs:
        if any(all(params.get(k) == v for k, v in setup.items()) for setup in filled):
            continue
        reads = _ReadParams(params)
        _warm_caches(reads)
        filled.append({k: params[k] for k in sorted(reads.read - set(_NOT_CACHED)) if k in params})
    return len(filled)


def _warm_caches(params: dict) -> None:
    evaluation_tasks(params)
    model = build_model(params, torch.device("cpu"))
    if params["steps"]:
        PairTokens.build(training_pairs(params), model)
        if params["validation_source"] and params["validate_every"]:
            PairTokens.build(validation_pairs(params), model)


def evaluation_tasks(params: dict, names: list[str] | None = None) -> dict[str, TaskData]:
    """Each evaluation task's data (``eval_benchmarks``, or ``names`` of them), as its task loads it."""
    return {name: get_task(name).load(params) for name in (params["eval_benchmarks"] if names is None else names)}


def make_loss(params: dict, gather_across_ranks: bool = True) -> InfoNCELoss:
    """The run's InfoNCE loss; under torchrun it scores the global batch of all ranks (unless told otherwise)."""
    return InfoNCELoss(params["temperature"], learnable_temperature=params["learnable_temperature"],
                       symmetric=params["symmetric_loss"], gather_across_ranks=gather_across_ranks,
                       form=params["loss_form"])


def train_run(params: dict, model: BiEncoder, sampler: HybridBatchSampler, folder: Path,
              progress: bool = True, tokens: PairTokens | None = None, validate=None) -> list[dict]:
    """Fine-tune as ``params`` say, checkpointing into ``folder/checkpoint`` and resuming from it.

    ``validate`` (``make_validation``): the validation loss every ``validate_every`` steps; the model is left with
    the weights of its lowest one.

    A failure (a non-finite loss, say) is recorded in ``folder/failure.json`` before it propagates; the last
    good checkpoint stays in place. Under torchrun every rank trains; rank 0 alone writes.
    """
    if params["steps"] == 0:
        return []
    main = is_main()
    if main:
        (folder / "failure.json").unlink(missing_ok=True)
    resumed_at = checkpoint_step(folder / "checkpoint")
    if resumed_at is not None and main:
        print(f"resuming from the checkpoint at step {resumed_at} of {params['steps']}", flush=True)
    try:
        return train(
            model, sampler, steps=params["steps"], lr=params["learning_rate"], weight_decay=params["weight_decay"],
            warmup_steps=params["warmup"], max_grad_norm=params["max_grad_norm"], loss_fn=make_loss(params),
            mixed_precision=params["mixed_precision"], packing=PACKING_MODES[params["packing"]],
            cache_chunk_size=params["cache_chunk_size"], tokens=tokens, seed=params["seed"], log_path=folder / "steps.jsonl", checkpoint_dir=folder / "checkpoint",
            checkpoint_every=params["checkpoint_every"], progress=progress, validate=validate,
            validate_every=params["validate_every"] if validate is not None else 0,
        )
    except Exception as err:
        if not main:
            raise
        (folder / "failure.json").write_text(json.dumps({
            "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(),
            "last_checkpoint_step": checkpoint_step(folder / "checkpoint")}, indent=1) + "\n")
        raise


def environment_info() -> dict:
    """Git commit, package versions and machine: recorded with every run.

    Also where it ran: the launcher that started it (``$HYBRIDLIB_LAUNCHER``: sequential, local, slurm; None
    by hand), the host, ``CUDA_VISIBLE_DEVICES``, and the Slurm job (``slurm_job_id``, ``slurm_array_job_id``,
    ``slurm_array_task_id``) when there is one.
    """
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).parent).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "launcher": os.environ.get("HYBRIDLIB_LAUNCHER"),
        **{("cuda_visible_devices" if key == "devices" else key): value for key, value in where_am_i().items()
           if key != "pid"},
    }


def summarize_training(log: list[dict]) -> dict:
    """Kinds seen, first/last losses and throughput of a step log."""
    if not log:
        return {"steps": 0}
    kinds: dict[str, int] = {}
    for record in log:
        kinds[record["kind"]] = kinds.get(record["kind"], 0) + 1
    tail = log[-max(1, len(log) // 10):]
    return {
        "steps": len(log),
        "batch_kinds": kinds,
        "first_loss": log[0]["loss"],
        "final_loss_mean_last_10pct": float(np.mean([r["loss"] for r in tail])),
        "final_accuracy_mean_last_10pct": float(np.mean([r["accuracy"] for r in tail])),
        "validation": _validation_summary(log),
    }


def _validation_summary(log: list[dict]) -> dict | None:
    """The validation curve ([step, loss] pairs) and its lowest point, the weights the run kept; None without."""
    curve = [[r["step"], r["validation_loss"]] for r in log if r.get("validation_loss") is not None]
    if not curve:
        return None
    best_step, best_loss = min(curve, key=lambda point: point[1])  # the first of equal lowest, as train keeps
    return {"best_step": best_step, "best_loss": best_loss, "curve": curve}


def write_metrics(folder: Path, params: dict, evaluations: dict[str, dict], timings: dict,
                  log: list[dict], overlap: dict | None = None, earlier: dict | None = None) -> Path:
    """Write ``metrics.json`` and the per-benchmark tables. Written last: its presence means the run finished.

    metrics.json keys: run_name, params (resolved), environment (git commit, versions), timings (seconds),
    training (summary of the step log), overlap (train/eval text overlap per benchmark), and
    benchmarks: {name: the report of metrics.evaluate_embeddings, plus "language_probe" and "centred" from
    bias.evaluate_bias}. Tables: per_query-<name>.csv.gz, projection-<name>.csv.gz (PCA) and
    projection-lda-<name>.csv.gz (linear discriminant axes over the languages).

    ``earlier``: the record of the finished run these ``evaluations`` add tasks to (``records.added_tasks``): its
    training, timings and tasks stay as recorded, the new tasks join them, and ``extended`` lists each addition
    with where it ran.
    """
    gzip = {"method": "gzip", "mtime": 0}  # no time stamp inside: the same results give the same bytes
    for name, result in evaluations.items():
        result["per_query"].to_csv(folder / f"per_query-{name}.csv.gz", index=False, float_format="%.6g",
                                   compression=gzip)
        for suffix, table in result.get("tables", {}).items():  # LAReQA: projection, projection-lda
            table.to_csv(folder / f"{suffix}-{name}.csv.gz", index=False, float_format="%.5g", compression=gzip)
    record = {
        "run_name": params["run_name"],
        "params": params,
        "environment": environment_info(),
        "timings": {**timings, **{f"{name}_{k}": v for name, r in evaluations.items() for k, v in r["timings"].items()},
                    "train_pairs_per_second": float(np.mean([r["pairs_per_second"] for r in log])) if log else None},
        "training": summarize_training(log),
        "overlap": overlap or {},
        "benchmarks": {name: result["metrics"] for name, result in evaluations.items()},
    }
    if earlier is not None:
        record = {**earlier, "params": params, "timings": {**earlier["timings"], **record["timings"]},
                  "overlap": {**earlier.get("overlap", {}), **record["overlap"]},
                  "benchmarks": {**earlier["benchmarks"], **record["benchmarks"]},
                  "extended": [*earlier.get("extended", []), {"tasks": list(evaluations), "timings": timings,
                                                              "environment": record["environment"]}]}
    return write_atomic(folder / "metrics.json", json.dumps(record, indent=1, sort_keys=False) + "\n")


def check_overlap(pairs, tasks: dict[str, TaskData]) -> dict:
    """Training texts found in each task's texts (the task measures it; None where it does not)."""
    return {name: get_task(name).overlap(pairs, data) for name, data in tasks.items()}


def finish_run(folder: Path, params: dict, model: BiEncoder) -> None:
    """Save the model if asked, then drop the training checkpoint (the run is complete)."""
    if params["save_model"] and params["steps"] > 0:
        model.save(folder / "model")
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    best_weights_path(folder / "checkpoint").unlink(missing_ok=True)  # the model holds them now


class Run:
    """One run, in the order every entry point makes these calls (see the module docstring).

    Under torch.distributed (torchrun, ``distributed.init_from_env``) every rank loads the data and the
    model and trains; rank 0 alone writes the run folder, evaluates and saves, and the other ranks wait
    for it in ``finish``. ``timings`` collects the seconds of each phase for ``metrics.json``.
    """

    def __init__(self, params: dict, device: torch.device | None = None, progress: bool = True):
        world_size = world()[1]
        if params["batch_size"] % world_size:
            raise ParameterError(f"batch_size={params['batch_size']}: must be a multiple of the {world_size} "
                                 f"processes (each encodes batch_size / {world_size} pairs of every batch)")
        self.params, self.device, self.progress = params, device, progress
        self.main = is_main()
        self.timings: dict[str, float] = {}
        # a finished run that these parameters only add tasks to, with its weights kept: evaluate those, no training
        self.added = added_tasks(run_folder(params), params)
        if self.main:
            prepare_run_folder(params, adding_tasks=self.added is not None)
        barrier()  # the folder exists (and holds no other run) before any rank uses it
        self.folder = run_folder(params)
        self.log: list[dict] = []
        self.evaluations: dict[str, dict] = {}

    def load_data(self) -> None:
        """The training pairs and their sampler; the evaluation benchmarks and the train/eval overlap (rank 0)."""
        start = time.perf_counter()
        self.pairs = training_pairs(self.params)
        self.sampler = make_sampler(self.params, self.pairs)
        validates = self.params["validate_every"] and self.params["steps"]
        self.validation_pairs = validation_pairs(self.params) if validates else None
        self.tasks = evaluation_tasks(self.params, self.added) if self.main else {}
        self.overlap = check_overlap(self.pairs, self.tasks)
        self.timings["data_seconds"] = time.perf_counter() - start

    def load_model(self) -> None:
        """The model named by the parameters; when adding tasks to a trained run, the weights that run kept."""
        start = time.perf_counter()
        kept = self.added is not None and self.params["steps"] > 0
        self.model = build_model({**self.params, "model": str(self.folder / "model")} if kept else self.params,
                                 self.device)
        self.timings["model_load_seconds"] = time.perf_counter() - start

    def train(self) -> list[dict]:
        """Fine-tune (resuming from a checkpoint), then draw the training curves into ``training.png``.

        The pair table is tokenized once first (``tokens.PairTokens``, cached): no step calls the tokenizer. With a
        validation source the model ends with the weights of the lowest validation loss (``make_validation``).
        """
        if self.added is not None:
            if self.main:
                print(f"{self.folder} is finished: adding {self.added} with its weights, no training", flush=True)
            return self.log
        start = time.perf_counter()
        tokens = PairTokens.build(self.pairs, self.model) if self.params["steps"] else None
        validate = (make_validation(self.params, self.model, self.validation_pairs, self.progress)
                    if self.validation_pairs is not None else None)
        self.timings["tokenize_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        self.log = train_run(self.params, self.model, self.sampler, self.folder, progress=self.progress,
                             tokens=tokens, validate=validate)
        self.timings["train_seconds"] = time.perf_counter() - start
        if self.main:
            import matplotlib.pyplot as plt

            from ..analysis.plots import training_curves

            figure = training_curves(self.log)
            figure.savefig(self.folder / "training.png", dpi=100, bbox_inches="tight")
            plt.close(figure)
        return self.log

    def evaluate(self) -> dict[str, dict]:
        """Score the model on every evaluation task (rank 0; the other ranks wait in ``finish``)."""
        self._wait_group = long_wait_group()  # every rank, here: evaluation may outlast the collective timeout
        self.evaluations = {name: get_task(name).evaluate(self.model, data, self.params, self.progress)
                            for name, data in self.tasks.items()}
        return self.evaluations

    def finish(self) -> Path:
        """Write ``metrics.json`` and the tables, save the model if asked, drop the checkpoint; the metrics path."""
        path = self.folder / "metrics.json"
        if self.main and self.added is not None:  # the kept weights stay as they are
            write_metrics(self.folder, self.params, self.evaluations, self.timings, self.log, self.overlap,
                          earlier=read_record(path))
        elif self.main:
            write_metrics(self.folder, self.params, self.evaluations, self.timings, self.log, self.overlap)
            finish_run(self.folder, self.params, self.model)
        barrier(self._wait_group)  # the other ranks return once rank 0 has written everything
        return path


def run_experiment(params: dict, progress: bool = True, device: torch.device | None = None) -> Path:
    """A whole run (the calls notebooks/02_train.ipynb makes, in a row); returns the path of its metrics.json.

    ``device``: where the model runs (default: the ``device`` parameter).
    """
    run = Run(params, device=device, progress=progress)
    run.load_data()
    run.load_model()
    run.train()
    run.evaluate()
    return run.finish()


def run_file(params_file: str | Path) -> Path | None:
    """One run from a flat parameter file, in this process or as one rank under torchrun (joining its process
    group); the run folder on the main rank, None on the others."""
    params = resolve_params(load_yaml(params_file))
    device = init_from_env(params["device"])  # joins torchrun's process group; None in one process
    main_rank = is_main()
    try:
        path = run_experiment(params, device=device)
    finally:
        shutdown()
    return path if main_rank else None


def main(argv: list[str] | None = None) -> int:
    """``python -m hybridlib.experiment PARAMS.yaml``: one run from a flat parameter file.

    Also ``torchrun --nproc_per_node=N -m hybridlib.experiment PARAMS.yaml``: one run on N processes.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hybridlib.experiment PARAMS.yaml", file=sys.stderr)
        return 2
    try:
        path = run_file(argv[0])
    except (ParameterError, FileNotFoundError, CheckpointError) as err:  # one line: a bad file, a refused checkpoint
        print(f"error: {err}", file=sys.stderr)
        return 2
    if path is not None:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
