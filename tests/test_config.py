import json
from pathlib import Path

import pytest

from hybridlib.runs import experiment
from hybridlib.parameters import DEFAULTS
from hybridlib.runs.config import ParameterError, resolve_params


def test_defaults_resolve_and_notebook_parameters_match_defaults():
    import nbformat

    params = resolve_params({}, apply_env=False)
    assert params == {**DEFAULTS, "eval_benchmarks": ["xquad-r"]}
    nb = nbformat.read(Path(__file__).parents[1] / "notebooks" / "02_train.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    scope: dict = {}
    exec(cell.source, scope)
    names = {k for k in scope if not k.startswith("_")}
    assert names == set(DEFAULTS), "the notebook's parameters cell and config.DEFAULTS must list the same keys"
    assert {k: scope[k] for k in DEFAULTS} == DEFAULTS


@pytest.mark.parametrize("overrides, message", [
    ({"learning_rat": 1e-5}, "unknown parameter 'learning_rat'; did you mean 'learning_rate'"),
    ({"batch_size": "32"}, r"batch_size='32': must be an integer, got str"),
    ({"batch_size": 0}, "batch_size=0: must be a positive integer"),
    ({"ratio_mono": -0.5, "ratio_cross": 1.5}, "ratio_mono=-0.5: ratios must be non-negative"),
    ({"ratio_mono": 0.5, "ratio_cross": 0.6}, r"= 1.1 .* must sum to 1"),
    ({"ratio_mono": 0.0, "ratio_cross": 0.0, "ratio_multi": 0.0}, "all 0"),
    ({"mix": "per-batch"}, r"mix='per-batch': must be one of \['per_batch', 'within_batch'\]"),
    ({"eval_languages": ["en", "xx"]}, r"\['xx'\] in none of \['xquad-r'\]"),
    ({"eval_benchmarks": ["mlqa-r"], "eval_languages": ["en", "el"]}, r"\['el'\] in none of \['mlqa-r'\]"),
    ({"eval_benchmarks": ["mlqa-r", "tatoeba"], "eval_languages": ["en", "el"]}, r"mlqa-r keeps \['en'\]"),
    ({"eval_benchmarks": ["tatoeba"], "eval_languages": ["en"]}, r"tatoeba keeps none of them"),
    ({"eval_benchmarks": ["xquad-r", "xquad-r"]}, "a task is named twice"),
    ({"miracl_languages": ["sw", "xx"]}, r"\['xx'\] have no MIRACL dev split"),
    ({"tatoeba_max_pairs": 0}, "tatoeba_max_pairs=0: must be a positive integer or None"),
    ({"train_languages": ["th"]}, r"\['th'\] not in mlqa-r"),
    ({"steps": -1}, "steps=-1"),
    ({"learning_rate": 0.5}, r"learning_rate=0.5: must be in \(0, 0.01\]"),
    ({"temperature": 0.0}, r"temperature=0.0: must be in \[0.001, 10\]"),
    ({"model": "./no/such/model"}, "this local path does not exist"),
    ({"train_source": "mlqa"}, "neither a benchmark"),
    ({"max_groups": 0}, "max_groups=0: must be a positive integer or None"),
    ({"save_model": "yes"}, "must be true or false"),
    ({"eval_benchmarks": ["xquad"]}, "unknown task 'xquad'"),
    # hard negatives and the loss form
    ({"negatives": "hard"}, r"negatives='hard': must be one of \['none', 'mined', 'source'\]"),
    ({"loss_form": "eq1"}, r"loss_form='eq1': must be one of \['batch', 'paper'\]"),
    ({"loss_form": "paper"}, r"loss_form='paper' .* but negatives='none': set negatives to 'mined' or 'source'"),
    ({"negatives": "mined", "train_source": "mmarco"}, r"negatives='mined' .* 'mmarco' is not a benchmark: use "
                                                        r"negatives='source'"),
    ({"negatives": "source"}, r"negatives='source' .* the benchmark 'mlqa-r' has none: use negatives='mined'"),
    # several sources
    ({"train_source": ["mlqa-r", "mlqa"]}, r"train_source='mlqa': neither a benchmark"),
    ({"train_source": ["mlqa-r", "mlqa-r"]}, "names a source twice"),
    ({"train_source": []}, "a non-empty list"),
    ({"train_source": ["mlqa-r", "xquad-r"], "source_weights": [1.0]},
     r"source_weights=\[1.0\]: 1 weight for the 2 train sources \['mlqa-r', 'xquad-r'\]"),
    ({"train_source": ["mlqa-r", "xquad-r"], "source_weights": [1.5, -0.5]}, "every weight must be positive"),
    ({"train_source": ["mlqa-r", "xquad-r"], "source_weights": [0.5, 0.6]}, r"sum to 1.1: they must sum to 1"),
    ({"source_weights": "sized"}, "'size' or a list of numbers"),
    # validation
    ({"validate_every": 10}, "validate_every=10 needs a validation_source"),
    ({"validation_source": "squadshifts"}, "never used with validate_every=0"),
    ({"validation_source": "squad", "validate_every": 10}, "validation_source='squad': neither a benchmark"),
    ({"validation_source": "squadshifts", "validate_every": 500}, r"validate_every=500 > steps=100"),
    ({"validation_source": "xquad-r", "validate_every": 10}, "also in eval_benchmarks: picking the weights on it"),
    ({"validation_source": "mlqa-r", "validate_every": 10, "eval_benchmarks": ["xquad-r"]}, "also a train_source"),
    ({"validate_every": -1}, "validate_every=-1 must be >= 0"),
    ({"validation_source": "squadshifts", "validate_every": 10, "validation_batches": 0}, "validation_batches=0"),
])
def test_bad_parameters_name_key_value_and_fix(overrides, message):
    with pytest.raises(ParameterError, match=message):
        resolve_params(overrides, apply_env=False)


def test_yaml_scientific_notation_without_dot_is_read_as_a_number():
    # YAML 1.1 (PyYAML) loads `learning_rate: 5e-5` as the string "5e-5"
    import yaml

    loaded = yaml.safe_load("learning_rate: 5e-5\ntemperature: 2e-2")
    assert isinstance(loaded["learning_rate"], str)
    params = resolve_params(loaded, apply_env=False)
    assert params["learning_rate"] == 5e-5 and params["temperature"] == 0.02
    with pytest.raises(ParameterError, match="must be a finite number, got str"):
        resolve_params({"learning_rate": "fast"}, apply_env=False)


def test_override_file_from_environment_wins(tmp_path, monkeypatch):
    override = tmp_path / "o.yaml"
    override.write_text("steps: 3\nbatch_size: 4\n")
    monkeypatch.setenv("HYBRIDLIB_PARAMS_OVERRIDE", str(override))
    params = resolve_params({"steps": 500})
    assert params["steps"] == 3 and params["batch_size"] == 4
    assert resolve_params({"steps": 500}, apply_env=False)["steps"] == 500


def test_run_folder_with_other_parameters_is_refused(tmp_path):
    params = resolve_params({"output_dir": str(tmp_path), "run_name": "a"}, apply_env=False)
    folder = experiment.prepare_run_folder(params)
    assert json.loads((folder / "params.json").read_text()) == params
    experiment.prepare_run_folder(params)  # same parameters: fine (a rerun)
    experiment.prepare_run_folder({**params, "checkpoint_every": 7, "save_model": False})  # bookkeeping only
    with pytest.raises(ParameterError, match=r"already holds a run with other parameters.*'steps': \(100, 5\)"):
        experiment.prepare_run_folder({**params, "steps": 5})


def test_a_parameter_missing_from_an_old_record_counts_as_its_default():
    from hybridlib.parameters import differing_params

    params = resolve_params({"steps": 5}, apply_env=False)
    old = {k: v for k, v in params.items() if k != "cache_chunk_size"}  # recorded before the key existed
    assert differing_params(old, params) == {}
    assert differing_params(old, {**params, "cache_chunk_size": 8}) == {"cache_chunk_size": (None, 8)}


def test_new_parameters_default_to_the_earlier_behaviour():
    """Runs recorded before negatives, several sources and validation existed count as having the defaults."""
    from hybridlib.parameters import differing_params

    params = resolve_params({"steps": 5}, apply_env=False)
    new_keys = ("source_weights", "negatives", "loss_form", "validation_source", "validate_every", "validation_batches",
                "tatoeba_max_pairs", "miracl_languages", "miracl_max_passages")
    assert {k: params[k] for k in new_keys} == {"source_weights": "size", "negatives": "none", "loss_form": "batch",
                                                "validation_source": None, "validate_every": 0,
                                                "validation_batches": 10, "tatoeba_max_pairs": None,
                                                "miracl_languages": None, "miracl_max_passages": None}
    old = {k: v for k, v in params.items() if k not in new_keys}
    assert differing_params(old, params) == {}
    # a baseline (steps 0) may carry the sweep's validation settings
    resolve_params({"steps": 0, "validation_source": "squadshifts", "validate_every": 250}, apply_env=False)
