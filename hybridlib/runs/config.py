"""Run parameters: the flat defaults of a training run, and their validation.

The training notebook's ``parameters`` cell mirrors ``DEFAULTS``; papermill and sweeps override it.
``resolve_params`` checks every key, type and range before any data or model is loaded, so a typo
fails in a second with one message naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path

from .. import yamlfile
from ..data.pinned import BENCHMARKS, MIRACL_LANGUAGES, TASK_NAMES, benchmark_languages, task_languages
from ..data.sampler import validate_ratios
from ..parameters import (DEFAULTS, ENCODE_BACKENDS, ENCODE_DTYPES, KINDS, LANGUAGE_WEIGHTS, LOSS_FORMS, MIX_MODES,
                          MIXED_PRECISION_MODES, NEGATIVE_MODES, PACKING_MODES, POOLINGS, TASK_PARAMETERS,
                          VALIDATION_SOURCES)

_OPTIONAL_INT = ("train_max_groups", "max_groups", "cache_chunk_size", "tatoeba_max_pairs", "miracl_max_passages")
_OPTIONAL_STR = ("point", "validation_source")
_OPTIONAL_LIST = ("train_languages", "eval_languages", "miracl_languages")
_CHOICES = {"pooling": POOLINGS, "mix": MIX_MODES, "language_weights": LANGUAGE_WEIGHTS,
            "negatives": NEGATIVE_MODES, "loss_form": LOSS_FORMS,
            "mixed_precision": MIXED_PRECISION_MODES, "packing": PACKING_MODES,
            "encode_backend": ENCODE_BACKENDS, "encode_dtype": ENCODE_DTYPES}
_STEPS_OR_FRACTION = ("warmup",)  # a whole number means steps, a number in [0, 1) a fraction of the steps

OVERRIDE_ENV = "HYBRIDLIB_PARAMS_OVERRIDE"
_YAML_SCIENTIFIC = re.compile(r"^[-+]?\d+(\.\d*)?[eE][-+]?\d+$")


class ParameterError(ValueError):
    """A run parameter is unknown, of the wrong type or out of range."""


def _type_name(value) -> str:
    return type(value).__name__


def _check_type(key: str, value):
    default = DEFAULTS[key]
    if key in _OPTIONAL_INT:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ParameterError(f"{key}={value!r}: must be a positive integer or None")
        return value
    if key == "packing" and isinstance(value, bool):
        return "on" if value else "off"  # YAML 1.1 reads a bare on / off as true / false
    if key in _STEPS_OR_FRACTION:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ParameterError(f"{key}={value!r}: a fraction in [0, 1) or a whole number of steps")
        if value >= 1 and value != int(value):
            raise ParameterError(f"{key}={value!r}: a fraction in [0, 1) or a whole number of steps, not both")
        return int(value) if value >= 1 or isinstance(value, int) else float(value)
    if key in _OPTIONAL_STR:
        if value is not None and (not isinstance(value, str) or not value):
            raise ParameterError(f"{key}={value!r}: must be a non-empty string or None")
        return value
    if key == "train_source":
        return _check_train_source(value)
    if key == "source_weights":
        return _check_source_weights(value)
    if key in _OPTIONAL_LIST:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
            raise ParameterError(f"{key}={value!r}: must be a non-empty list of language codes or None")
        return sorted(set(value))
    if key == "eval_benchmarks":
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not value:
            raise ParameterError(f"{key}={value!r}: must be a non-empty list drawn from {list(TASK_NAMES)}")
        for name in value:
            if name not in TASK_NAMES:
                raise ParameterError(f"{key}: unknown task {name!r}; choose from {list(TASK_NAMES)}")
        if len(set(value)) < len(value):
            raise ParameterError(f"{key}={list(value)}: a task is named twice")
        return list(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParameterError(f"{key}={value!r}: must be true or false, got {_type_name(value)}")
        return value
    if isinstance(default, float):
        if isinstance(value, str) and _YAML_SCIENTIFIC.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 5e-4 (no dot) as text; the user meant a number
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParameterError(f"{key}={value!r}: must be a finite number, got {_type_name(value)}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"{key}={value!r}: must be an integer, got {_type_name(value)}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str) or (not value and key not in ("query_prefix", "passage_prefix")):
            raise ParameterError(f"{key}={value!r}: must be a non-empty string, got {_type_name(value)}")
        return value
    return value


def _check_train_source(value):
    """A source name or path, or a list of distinct ones (a list of one is that one: the same run)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(v, str) and v for v in items):
        raise ParameterError(f"train_source={value!r}: a source (benchmark, 'mmarco' or pair file) or a non-empty "
                             "list of them")
    if len(set(items)) != len(items):
        raise ParameterError(f"train_source={value!r} names a source twice; list each once")
    return items[0] if len(items) == 1 else list(items)


def _check_source_weights(value):
    if value == "size":
        return value
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ParameterError(f"source_weights={value!r}: 'size' or a list of numbers, one per train_source")
    if not all(v > 0 for v in value):
        raise ParameterError(f"source_weights={list(value)}: every weight must be positive; drop a source rather "
                             "than weight it 0")
    if abs(sum(value) - 1.0) > 1e-6:
        raise ParameterError(f"source_weights={list(value)} sum to {sum(value):.6g}: they must sum to 1; rescale them")
    return [float(v) for v in value]


def train_sources(params: dict) -> list[str]:
    """``train_source`` as a list (one name or several)."""
    source = params["train_source"]
    return [source] if isinstance(source, str) else list(source)


def _check_train_sources(params: dict) -> None:
    """Every train source exists and has the train languages; the weights and negatives fit the sources."""
    sources = train_sources(params)
    weights = params["source_weights"]
    if weights != "size" and len(weights) != len(sources):
        raise ParameterError(f"source_weights={weights}: {len(weights)} weight{'s' * (len(weights) != 1)} for the "
                             f"{len(sources)} train sources "
                             f"{sources}; give one per source, or 'size'")
    for source in sources:
        if source in BENCHMARKS:
            _check_languages("train_languages", params["train_languages"], [source])
        elif source == "mmarco":
            from ..data.pair_sources import MMARCO_LANGUAGES

            unknown = [lang for lang in params["train_languages"] or [] if lang not in MMARCO_LANGUAGES]
            if unknown:
                raise ParameterError(f"train_languages={params['train_languages']}: {unknown} not in mMARCO; it has "
                                     f"{sorted(MMARCO_LANGUAGES)}")
        elif not Path(source).expanduser().exists():
            raise ParameterError(f"train_source={source!r}: neither a benchmark ({sorted(BENCHMARKS)}), 'mmarco', "
                                 "nor an existing .jsonl/.parquet file")
        if params["negatives"] == "mined" and source not in BENCHMARKS:
            raise ParameterError(f"negatives='mined' takes another sentence of a benchmark's gold paragraph, and "
                                 f"train_source {source!r} is not a benchmark: use negatives='source' (its own "
                                 "negatives column) or 'none'")
        if params["negatives"] == "source" and source in BENCHMARKS:
            raise ParameterError(f"negatives='source' takes the source's own negatives, and the benchmark {source!r} "
                                 "has none: use negatives='mined' (another sentence of the gold paragraph) or 'none'")


def _check_validation(params: dict) -> None:
    """A validation source that exists and is neither trained nor evaluated on; a validate_every that runs it."""
    source, every = params["validation_source"], params["validate_every"]
    if every < 0 or params["validation_batches"] < 1:
        raise ParameterError(f"validate_every={every} must be >= 0 (0: off) and validation_batches="
                             f"{params['validation_batches']} >= 1")
    if params["loss_form"] == "paper" and params["negatives"] == "none":
        raise ParameterError("loss_form='paper' scores each query against its own positive and the batch's hard "
                             "negatives, but negatives='none': set negatives to 'mined' or 'source', or use "
                             "loss_form='batch'")
    if source is None:
        if every:
            raise ParameterError(f"validate_every={every} needs a validation_source: a benchmark "
                                 f"({sorted(BENCHMARKS)}), 'squadshifts' or a .jsonl/.parquet pair file")
        return
    if source not in BENCHMARKS and source not in VALIDATION_SOURCES and not Path(source).expanduser().exists():
        raise ParameterError(f"validation_source={source!r}: neither a benchmark ({sorted(BENCHMARKS)}), "
                             f"{' nor '.join(repr(s) for s in VALIDATION_SOURCES)}, nor an existing .jsonl/.parquet file")
    if not every:
        raise ParameterError(f"validation_source={source!r} is never used with validate_every=0: set validate_every "
                             "to a number of steps, or validation_source to None")
    if params["steps"] and every > params["steps"]:
        raise ParameterError(f"validate_every={every} > steps={params['steps']}: the validation loss would never be "
                             "computed; lower validate_every")
    if source in params["eval_benchmarks"]:
        raise ParameterError(f"validation_source={source!r} is also in eval_benchmarks: picking the weights on it "
                             "would tune on the test set; validate on another source (e.g. 'squadshifts')")
    if source in train_sources(params):
        raise ParameterError(f"validation_source={source!r} is also a train_source: a loss on training pairs cannot "
                             "tell when training overfits; validate on another source (e.g. 'squadshifts')")


def _check_languages(key: str, languages, sources: list[str]) -> None:
    if languages is None:
        return
    for source in sources:
        available = benchmark_languages(source)
        missing = [lang for lang in languages if lang not in available]
        if missing:
            raise ParameterError(f"{key}={languages}: {missing} not in {source}; it has {available}")


def _check_eval_languages(params: dict) -> None:
    """Each task keeps the ``eval_languages`` it has; a code no task has, or a LAReQA benchmark left with fewer than
    two languages, is an error. MIRACL takes ``miracl_languages`` instead."""
    unknown = [lang for lang in params["miracl_languages"] or [] if lang not in MIRACL_LANGUAGES]
    if unknown:
        raise ParameterError(f"miracl_languages={params['miracl_languages']}: {unknown} have no MIRACL dev split; "
                             f"choose from {sorted(MIRACL_LANGUAGES)}")
    languages = params["eval_languages"]
    tasks = [t for t in params["eval_benchmarks"] if "eval_languages" in TASK_PARAMETERS[t]]  # not MIRACL
    if languages is None or not tasks:
        return
    offered = {t: task_languages(t) + (["en"] if t == "tatoeba" else []) for t in tasks}  # English: Tatoeba's pivot
    nowhere = [lang for lang in languages if not any(lang in have for have in offered.values())]
    if nowhere:
        raise ParameterError(f"eval_languages={languages}: {nowhere} in none of {tasks} (" + "; ".join(
            f"{t} has {have}" for t, have in offered.items()) + ")")
    for task in tasks:
        kept = [lang for lang in languages if lang in task_languages(task)]
        if task in BENCHMARKS and len(kept) < 2:
            raise ParameterError(f"eval_languages={languages}: {task} keeps {kept}, and cross-lingual evaluation "
                                 "needs at least two of its languages")
        if not kept:
            raise ParameterError(f"eval_languages={languages}: {task} keeps none of them; it has {task_languages(task)}")


def resolve_params(overrides: dict | None = None, *, apply_env: bool = True) -> dict:
    """Defaults updated with ``overrides``, every key checked. Returns a new, complete dict.

    With ``apply_env``, a YAML file named by ``$HYBRIDLIB_PARAMS_OVERRIDE`` is applied last: this is how
    CI runs the notebooks in a cheap profile without editing them.
    """
    merged = dict(DEFAULTS)
    layers = [overrides or {}]
    if apply_env and os.environ.get(OVERRIDE_ENV):
        layers.append(load_yaml(os.environ[OVERRIDE_ENV]))
    for layer in layers:
        for key, value in layer.items():
            if key not in DEFAULTS:
                close = difflib.get_close_matches(key, DEFAULTS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(DEFAULTS)}"
                raise ParameterError(f"unknown parameter {key!r}{hint}")
            merged[key] = value
    params = {key: _check_type(key, value) for key, value in merged.items()}
    for key, choices in _CHOICES.items():
        if params[key] not in choices:
            raise ParameterError(f"{key}={params[key]!r}: must be one of {list(choices)}")

    try:
        validate_ratios(ratios_of(params), prefix="ratio_")
    except ValueError as err:
        raise ParameterError(str(err)) from None

    if params["batch_size"] < 1:
        raise ParameterError(f"batch_size={params['batch_size']}: must be a positive integer")
    if params["steps"] < 0:
        raise ParameterError(f"steps={params['steps']}: must be 0 (evaluate only) or more")
    if not 0 < params["learning_rate"] <= 1e-2:
        raise ParameterError(f"learning_rate={params['learning_rate']}: must be in (0, 0.01]; typical: 1e-5 to 1e-4")
    if not 0.001 <= params["temperature"] <= 10:
        raise ParameterError(f"temperature={params['temperature']}: must be in [0.001, 10]; typical: 0.01 to 0.1")
    if params["weight_decay"] < 0 or params["max_grad_norm"] <= 0:
        raise ParameterError("weight_decay must be >= 0 and max_grad_norm > 0, got "
                             f"{params['weight_decay']} and {params['max_grad_norm']}")
    if params["checkpoint_every"] < 0:
        raise ParameterError(f"checkpoint_every={params['checkpoint_every']}: must be 0 (never) or a number of steps")
    for key in ("query_max_length", "passage_max_length", "eval_batch_size"):
        if params[key] < 1:
            raise ParameterError(f"{key}={params[key]}: must be a positive integer")

    _check_train_sources(params)
    _check_validation(params)
    _check_eval_languages(params)

    model = params["model"]
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise ParameterError(f"model={model!r}: this local path does not exist; give an existing folder or a "
                             "Hugging Face name such as 'xlm-roberta-base'")
    return params


def ratios_of(params: dict) -> dict[str, float]:
    return {kind: params[f"ratio_{kind}"] for kind in KINDS}


def load_yaml(path: str | Path) -> dict:
    """A parameter or sweep file as a dict; ``ParameterError`` naming file, line and column if it is malformed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parameter file {path} does not exist")
    try:
        content = yamlfile.load_yaml(path) or {}
    except yamlfile.YAMLFileError as err:
        raise ParameterError(str(err)) from None  # the CLIs print a ParameterError as one line, exit 2
    if not isinstance(content, dict):
        raise ParameterError(f"{path}: expected a mapping of parameter names to values")
    return content
