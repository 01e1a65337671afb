"""The task interface: every task has one shape; LAReQA keeps its numbers; a finished run gains a task with the
weights it kept, or is redone (moved aside, never deleted) when it kept none."""

import contextlib
import io
import json
import subprocess
import sys

import pytest
import yaml

from hybridlib.data.pinned import TASK_NAMES
from hybridlib.evaluation.tasks import Task, get_task, report_value
from hybridlib.records import added_tasks
from hybridlib.runs.config import resolve_params

TINY = {"model": "tiny-random", "steps": 2, "batch_size": 8, "max_groups": 10, "eval_languages": ["en", "de", "zh"],
        "query_max_length": 24, "passage_max_length": 32, "tatoeba_max_pairs": 20, "checkpoint_every": 0}


def test_every_task_has_the_one_shape():
    for name in TASK_NAMES:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
        assert task.headline in task.interval_metrics, name
        for method in ("languages", "load", "evaluate", "overlap"):
            assert callable(getattr(task, method))
    with pytest.raises(ValueError, match="unknown task 'xquad'"):
        get_task("xquad")
    assert report_value({"map": {"multi": 0.5}, "rank_distance": 3.0}, "map", "multi") == 0.5
    assert report_value({"map": {"multi": 0.5}, "rank_distance": 3.0}, "rank_distance", "multi") == 3.0
    assert report_value({}, "accuracy", "en_xx") is None


def test_the_lareqa_task_gives_exactly_what_evaluate_model_gives(xquad):
    """XQuAD-R through the task interface: the same report and per-query table as the evaluation step itself."""
    import pandas as pd

    from hybridlib.data.benchmarks import load_benchmark
    from hybridlib.evaluation.evaluate import evaluate_model
    from hybridlib.models.build import build_model

    params = resolve_params({**TINY, "eval_languages": None, "max_groups": 8})
    model = build_model(params)
    task = get_task("xquad-r")
    data = task.load(params)
    assert len(data.queries) == 8 * 11 and data.languages == sorted(xquad.languages)
    result = task.evaluate(model, data, params, progress=False)
    direct = evaluate_model(model, load_benchmark("xquad-r", max_groups=8), params["eval_batch_size"], False)
    assert json.dumps(result["metrics"], sort_keys=True) == json.dumps(direct["metrics"], sort_keys=True)
    pd.testing.assert_frame_equal(result["per_query"], direct["per_query"])
    assert set(result["tables"]) == {"projection", "projection-lda"}


def finished_run(folder, params, kept_weights: bool):
    """A run folder as a finished run leaves it: metrics.json with its parameters (and model/ when kept)."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"run_name": "r", "params": params, "benchmarks": {}}))
    if kept_weights:
        (folder / "model").mkdir()
    return folder


@pytest.mark.parametrize("change, kept, expected", [
    ({"eval_benchmarks": ["xquad-r", "tatoeba"]}, True, ["tatoeba"]),
    ({"eval_benchmarks": ["xquad-r", "tatoeba"], "tatoeba_max_pairs": 50}, True, ["tatoeba"]),  # the new task's own
    ({"eval_benchmarks": ["xquad-r", "miracl"], "miracl_languages": ["sw"]}, True, ["miracl"]),
    ({"eval_benchmarks": ["xquad-r", "tatoeba"]}, False, None),  # no weights kept: redo
    ({"eval_benchmarks": ["xquad-r", "tatoeba"], "eval_languages": ["en", "de"]}, True, None),  # xquad-r reads it too
    ({"eval_benchmarks": ["xquad-r", "tatoeba"], "learning_rate": 1e-5}, True, None),  # a training change
    ({"eval_benchmarks": ["tatoeba"]}, True, None),  # a task dropped
    ({}, True, None),  # nothing added
])
def test_added_tasks_only_when_tasks_are_all_that_is_added_and_weights_were_kept(tmp_path, change, kept, expected):
    old = resolve_params({**TINY, "eval_benchmarks": ["xquad-r"]})
    folder = finished_run(tmp_path / "r", old, kept)
    assert added_tasks(folder, resolve_params({**old, **change})) == expected


def test_an_untrained_run_needs_no_kept_weights(tmp_path):
    old = resolve_params({**TINY, "steps": 0, "eval_benchmarks": ["xquad-r"]})
    folder = finished_run(tmp_path / "r", old, kept_weights=False)
    assert added_tasks(folder, resolve_params({**old, "eval_benchmarks": ["xquad-r", "tatoeba"]})) == ["tatoeba"]


def test_a_task_added_to_a_run_that_kept_its_weights_is_evaluated_without_training(tmp_path):
    from hybridlib.runs.experiment import run_experiment

    params = resolve_params({**TINY, "output_dir": str(tmp_path), "run_name": "r", "save_model": True,
                             "learning_rate": 5e-3})  # steps that move the weights
    folder = tmp_path / "r"
    run_experiment(params, progress=False)
    before = json.loads((folder / "metrics.json").read_text())
    steps_log = (folder / "steps.jsonl").read_bytes()
    more = resolve_params({**params, "eval_benchmarks": ["xquad-r", "tatoeba"]})
    run_experiment(more, progress=False)
    after = json.loads((folder / "metrics.json").read_text())
    assert (folder / "steps.jsonl").read_bytes() == steps_log  # no step was taken again
    assert after["training"] == before["training"] and after["benchmarks"]["xquad-r"] == before["benchmarks"]["xquad-r"]
    assert after["params"] == more and list(after["benchmarks"]) == ["xquad-r", "tatoeba"]
    assert after["extended"][0]["tasks"] == ["tatoeba"] and "tatoeba_encode_seconds" in after["timings"]
    assert (folder / "per_query-tatoeba.csv.gz").is_file()
    # the kept weights scored it: their predictions, not those of the untrained model the parameters name
    import pandas as pd
    import torch

    from hybridlib.models.build import build_model

    kept, untrained = build_model({**more, "model": str(folder / "model")}), build_model(more)
    assert any(not torch.equal(a, b) for a, b in zip(kept.state_dict().values(), untrained.state_dict().values()))
    task = get_task("tatoeba")
    data = task.load(more)
    recorded = pd.read_csv(folder / "per_query-tatoeba.csv.gz")["predicted"].tolist()
    assert recorded == task.evaluate(kept, data, more, progress=False)["per_query"]["predicted"].tolist()
    assert recorded != task.evaluate(untrained, data, more, progress=False)["per_query"]["predicted"].tolist()


@pytest.mark.slow
def test_the_sweep_adds_a_task_where_weights_were_kept_and_redoes_the_rest(tmp_path):
    """Two finished points, one that kept its weights: adding Tatoeba to the sweep evaluates it on the first
    without training, moves the second into .launch/replaced (kept) and runs it again."""
    from hybridlib.runs.sweep import run_sweep

    base = {k: v for k, v in TINY.items()}
    spec = {"sweep": "grow", "output_dir": str(tmp_path / "out"), "base": base,
            "runs": {"kept": {"save_model": True}, "dropped": {"save_model": False}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    with contextlib.redirect_stdout(io.StringIO()):
        run_sweep(path, analysis=False)
    kept_log = (tmp_path / "out" / "kept" / "steps.jsonl").read_bytes()
    spec["base"]["eval_benchmarks"] = ["xquad-r", "tatoeba"]
    path.write_text(yaml.safe_dump(spec))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run_sweep(path, analysis=False)
    text = printed.getvalue()
    assert "kept: " in text and "adds ['tatoeba'], evaluated with the weights it kept (no training)" in text
    assert "finished with other parameters (eval_benchmarks) and no weights kept to reuse: moved to" in text
    replaced = list((tmp_path / "out" / ".launch" / "replaced").iterdir())
    assert [p.name.split("-2")[0] for p in replaced] == ["dropped"]
    assert (replaced[0] / "metrics.json").is_file()  # the old run is kept
    assert (tmp_path / "out" / "kept" / "steps.jsonl").read_bytes() == kept_log
    for run in ("kept", "dropped"):
        record = json.loads((tmp_path / "out" / run / "metrics.json").read_text())
        assert list(record["benchmarks"]) == ["xquad-r", "tatoeba"], run
    assert list(summary.columns[:5]) == ["label", "map_mono", "map_cross", "map_multi", "tatoeba accuracy_en_xx"]
    assert summary.loc["dropped", "status"].startswith("ok") and summary["tatoeba accuracy_en_xx"].notna().all()
    # a third invocation finds both finished with these parameters
    again = io.StringIO()
    with contextlib.redirect_stdout(again):
        run_sweep(path, analysis=False)
    assert again.getvalue().count("already finished with these parameters, skipped") == 2


def test_help_still_imports_no_heavy_module():
    out = subprocess.run([sys.executable, "-c", "import sys, hybridlib.runs.sweep, hybridlib.evaluation.tasks; "
                          "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
