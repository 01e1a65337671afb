"""The run parameters' contract, light enough for ``--help``: every parameter with its default, the allowed
values of the categorical ones, and the comparison of two recipes.

It imports nothing heavy (no torch, transformers or datasets), so the sweep's ``--help``, ``--dry-run`` and run
lock stay fast; the stage that implements a parameter imports its allowed values from here
(docs/architecture.md, "Parameters").
"""

from __future__ import annotations

PACKING_MODES = {"auto": "auto", "on": True, "off": False}  # run parameter -> train(packing=...)


NEGATIVE_MODES = ("none", "mined", "source")


VALIDATION_SOURCES = ("squadshifts",)  # streamed sources a validation may name, besides benchmarks and pair files


# Every parameter of a run, with its default. Comments say what each one does.
DEFAULTS: dict = {
    "run_name": "run",  # folder name of the run inside output_dir
    "point": None,  # the sweep point this run belongs to (runs of one point differ by seed); None: run_name
    "output_dir": "outputs/scratch",  # the sweep folder; the run writes into output_dir/run_name
    "model": "multilingual-e5-small-q4",  # HF name or local path; "multilingual-e5-small-q4" is embedded
    "pooling": "mean",  # "mean" or "cls"
    "query_prefix": "query: ",
    "passage_prefix": "passage: ",
    "query_max_length": 64,  # tokens
    "passage_max_length": 128,  # tokens
    "train_source": "mlqa-r",  # a benchmark (question -> gold sentence pairs), "mmarco" (streamed), or a .jsonl/.parquet path; or a list of them (each batch from one)
    "source_weights": "size",  # several train sources: "size" (a batch's source drawn in proportion to its pairs) or one weight per source, summing to 1
    "negatives": "none",  # hard negatives: "none", "mined" (another sentence of the gold paragraph; benchmarks), "source" (the source's own, e.g. mMARCO's)
    "train_languages": None,  # list of codes, or None for every language of the source
    "train_max_groups": None,  # keep only the first N groups of the training source (None: all)
    "ratio_mono": 0.5,  # share of mono batches (per_batch) or mono pairs (within_batch)
    "ratio_cross": 0.5,
    "ratio_multi": 0.0,
    "mix": "per_batch",  # "per_batch" or "within_batch"
    "language_weights": "uniform",  # "uniform" or "size"
    "batch_size": 32,
    "steps": 100,  # 0 evaluates the untouched model (the baseline of every sweep)
    "learning_rate": 3e-5,
    "weight_decay": 0.01,
    "warmup": 0.1,  # fraction of steps (< 1) or a number of steps
    "max_grad_norm": 1.0,
    "temperature": 0.05,
    "learnable_temperature": False,
    "freeze_embeddings": False,  # keep the token embedding table fixed (faster on CPU; unseen languages keep theirs)
    "symmetric_loss": False,  # add the passage -> query InfoNCE term
    "loss_form": "batch",  # with negatives: "batch" (each query vs all positives and negatives) or "paper" (own positive + the negatives, Eq. 1)
    "cache_chunk_size": None,  # GradCache: embed in chunks of N texts so batches beyond GPU memory fit (None: off)
    "packing": "auto",  # padding-free packed sequences: "auto" (on a CUDA GPU with varlen attention), "on", "off"
    "mixed_precision": "auto",  # "auto" (bf16 on GPU), "bf16", "fp16", "no"
    "device": "auto",  # "auto", "cpu", "cuda", "cuda:1", ...
    "seed": 0,
    "eval_benchmarks": ["xquad-r"],  # evaluation tasks: any of "xquad-r", "mlqa-r", "tatoeba", "miracl"
    "eval_languages": None,  # list of codes: each task keeps those it has (None: all); not MIRACL's (miracl_languages)
    "max_groups": 300,  # XQuAD-R / MLQA-R: first N question groups (None: the whole benchmark)
    "tatoeba_max_pairs": None,  # Tatoeba: the first N sentence pairs of each language (None: all, up to 1,000)
    "miracl_languages": None,  # MIRACL dev: list of codes (None: the reference paper's 15)
    "miracl_max_passages": None,  # MIRACL: None = the full corpus; N = judged passages + the first N (NOT comparable)
    "eval_batch_size": 64,
    "encode_backend": "eager",  # "eager" or "compile" (torch.compile, frozen weights: same numbers, faster after a compile)
    "encode_dtype": "fp32",  # "fp32" or "bf16" (faster on bf16 hardware; the scores change a little)
    "save_model": True,  # write the fine-tuned model into the run folder (never committed)
    "checkpoint_every": 50,  # save the training state every N steps (0: never); a restarted run resumes
    "validation_source": None,  # None, a benchmark, "squadshifts" (English, streamed from the hub) or a pair file
    "validate_every": 0,  # steps between validation losses (0: off); the weights of the lowest are kept, evaluated, saved
    "validation_batches": 10,  # how many fixed batches (seed 0) the validation loss averages
}


# Keys that say where a run goes or how it is kept, not what it computes: two runs that differ only in
# these are the same experiment (a rerun may change them without being refused or repeated).
BOOKKEEPING_KEYS = ("run_name", "point", "output_dir", "checkpoint_every", "save_model")


# What each evaluation task reads besides the model: a finished run that kept its weights can add a task whose
# parameters no task it already has reads (``records.added_tasks``), without training again.
TASK_PARAMETERS = {"xquad-r": ("eval_languages", "max_groups"), "mlqa-r": ("eval_languages", "max_groups"),
                   "tatoeba": ("eval_languages", "tatoeba_max_pairs"),
                   "miracl": ("miracl_languages", "miracl_max_passages")}


def differing_params(old: dict, new: dict) -> dict:
    """Result-relevant keys whose values differ: {key: (old, new)}.

    A key missing from a record counts as its default, so a run recorded before a parameter existed (whose
    default reproduces the earlier behaviour) still counts as finished with the same parameters.
    """
    old, new = {**DEFAULTS, **old}, {**DEFAULTS, **new}
    keys = (set(old) | set(new)) - set(BOOKKEEPING_KEYS)
    return {k: (old.get(k), new.get(k)) for k in sorted(keys) if old.get(k) != new.get(k)}


POOLINGS = ("mean", "cls")


ENCODE_BACKENDS = ("eager", "compile")


ENCODE_DTYPES = ("fp32", "bf16")


KINDS = ("mono", "cross", "multi")


MIX_MODES = ("per_batch", "within_batch")


LANGUAGE_WEIGHTS = ("uniform", "size")


LOSS_FORMS = ("batch", "paper")  # with hard negatives: against all positives and negatives, or own positive + negatives


MIXED_PRECISION_MODES = ("auto", "bf16", "fp16", "no")
