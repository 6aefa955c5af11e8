"""The lm-evaluation-harness adapter, through lm-eval's own command line on local tasks (a task YAML and a
data file written here; nothing downloaded): multiple choice, generation and rolling likelihood."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="the lmeval extra: pip install 'radd[lmeval]'")

from radd_cli import tasks  # noqa: E402

ROOT = Path(__file__).parents[1]
TASK = "sort"


def multiple_choice_rows(count: int) -> list[dict]:
    """Held-out prompts with the answer among three wrong ones: reversed, shuffled, and other numbers."""
    rng, rows = random.Random(0), []
    for example in tasks.examples(TASK, "test")[:count]:
        numbers = example.response.split()
        shuffled = numbers[:]
        while shuffled == numbers or shuffled == numbers[::-1]:
            rng.shuffle(shuffled)
        wrong = [numbers[::-1], shuffled, [str((int(n) + 37) % 100) for n in numbers]]
        choices = [example.response] + [" " + " ".join(w) for w in wrong]
        rng.shuffle(choices)
        rows.append({"prompt": example.prompt, "response": example.response, "choices": choices})
        rows[-1]["answer"] = choices.index(example.response)
    return rows


def write_tasks(folder: Path, rows: list[dict]) -> Path:
    data = folder / "sort.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (folder / "mc.yaml").write_text(
        "task: radd_test_mc\n" + common + "output_type: multiple_choice\ndoc_to_text: '{{prompt}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\ntarget_delimiter: ''\n"
        "metric_list:\n  - metric: acc\n"
    )
    (folder / "gen.yaml").write_text(
        "task: radd_test_gen\n" + common + "output_type: generate_until\ndoc_to_text: '{{prompt}}'\n"
        "doc_to_target: '{{response}}'\ntarget_delimiter: ''\n"
        "generation_kwargs:\n  until: ['\\n']\n  do_sample: false\n  max_gen_toks: 16\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "    regexes_to_ignore: ['^\\s+', '\\s+$']\n"
    )
    (folder / "rolling.yaml").write_text(
        "task: radd_test_rolling\n" + common + "output_type: loglikelihood_rolling\ndoc_to_text: ''\n"
        "doc_to_target: '{{prompt}}{{response}}'\nmetric_list:\n  - metric: bits_per_byte\n"
    )
    return folder


def discovers_entry_points() -> bool:
    """Whether this lm-eval finds `--model radd` through the installed entry point alone."""
    probe = "from lm_eval.api.registry import get_model; get_model('radd')"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0


def run_lm_eval(model: Path, folder: Path, task_names: str, extra: str = "") -> dict:
    """lm-eval's own command line (`lm_eval` itself where it reads entry points); the results JSON."""
    command = ["lm_eval"] if discovers_entry_points() else [sys.executable, "-m", "radd_cli.lmeval"]
    output = folder / "results"
    args = ["--model", "radd", "--model_args", f"pretrained={model}{extra}", "--tasks", task_names]
    args += ["--include_path", str(folder), "--batch_size", "64", "--output_path", str(output), "--device", "cpu"]
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command + args, capture_output=True, text=True, timeout=600, env=env, cwd=folder)
    assert finished.returncode == 0, finished.stderr[-3000:]
    [saved] = output.rglob("results_*.json")
    return json.loads(saved.read_text())["results"]


def test_the_entry_point_names_the_adapter():
    from lm_eval.api.model import LM

    points = [p for p in metadata.entry_points(group="lm_eval.models") if p.name == "radd"]
    assert points and points[0].value == "radd_cli.lmeval:RaddLM", "reinstall radd (pip install -e .)"
    assert issubclass(points[0].load(), LM)
    from lm_eval.api.registry import Registry

    registry = Registry("model")  # what lm-eval's plugin discovery does: the entry point as a lazy placeholder
    registry.register("radd", target=points[0])
    assert registry.get("radd").__name__ == "RaddLM"


def test_lm_eval_runs_radd_on_local_tasks_and_the_trained_model_beats_chance(tmp_path, sort_model):
    folder = write_tasks(tmp_path, multiple_choice_rows(60))
    results = run_lm_eval(sort_model, folder, "radd_test_mc,radd_test_gen,radd_test_rolling")
    accuracy = results["radd_test_mc"]["acc,none"]
    assert accuracy > 0.6, results  # chance is 0.25
    assert 0.0 <= results["radd_test_gen"]["exact_match,none"] <= 1.0
    assert results["radd_test_rolling"]["bits_per_byte,none"] > 0


def test_the_monte_carlo_likelihood_agrees_with_the_exact_one(tmp_path, sort_model):
    folder = write_tasks(tmp_path, multiple_choice_rows(30))
    exact = run_lm_eval(sort_model, folder, "radd_test_mc")["radd_test_mc"]["acc,none"]
    sampled = run_lm_eval(sort_model, folder, "radd_test_mc", ",likelihood=monte_carlo,mc_samples=32")
    assert abs(sampled["radd_test_mc"]["acc,none"] - exact) <= 0.2
