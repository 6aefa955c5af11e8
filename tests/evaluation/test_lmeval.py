"""The lm-evaluation-harness adapter, through lm-eval's own command line on local tasks (a task YAML and a
data file written here; nothing downloaded): multiple choice, generation and rolling likelihood."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="the lmeval extra: pip install 'radd[lmeval]'")

from radd_cli.data import tasks  # noqa: E402
from radd_cli.evaluation import tasks as task_scoring  # noqa: E402
from tests.conftest import require  # noqa: E402

ROOT = Path(__file__).parents[2]
TASK = "sort"


@pytest.fixture(scope="module")
def sort_model(tmp_path_factory) -> Path:
    """A small model trained briefly on task:sort (the recipe `sort`, shortened)."""
    from radd_cli.training.recipe import load_recipe
    from radd_cli.training.trainer import Trainer

    folder = tmp_path_factory.mktemp("sort-model")
    overrides = [f"data.cache_dir={folder / 'cache'}", "training.steps=400", "checkpoint.every=400"]
    overrides += ["evaluation.batches=1", "sampling.num_samples=1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and far faster on a busy machine
    try:
        return Trainer(load_recipe("sort", overrides), folder / "run", show_progress=False).run().final_dir
    finally:
        torch.set_num_threads(threads)


def multiple_choice_rows(count: int) -> list[dict]:
    """Held-out prompts with the answer among three wrong ones: reversed, and with one or all digits not in
    the prompt (sorted)."""
    rng, rows = random.Random(0), []
    for example in tasks.examples(TASK, "test")[:count]:
        digits = example.response.split()
        others = [str(d) for d in range(10) if str(d) not in digits]
        one_foreign = sorted(digits[1:] + [rng.choice(others)], key=int)
        all_foreign = sorted(rng.sample(others, min(len(digits), len(others))), key=int)
        choices = [example.response] + [" " + " ".join(w) for w in (digits[::-1], one_foreign, all_foreign)]
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
    output = Path(tempfile.mkdtemp(prefix="results-", dir=folder))
    args = ["--model", "radd", "--model_args", f"pretrained={model}{extra}", "--tasks", task_names]
    args += ["--include_path", str(folder), "--batch_size", "64", "--output_path", str(output), "--device", "cpu"]
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    finished = subprocess.run(command + args, capture_output=True, text=True, timeout=600, env=env, cwd=folder)
    assert finished.returncode == 0, finished.stderr[-3000:]
    [saved] = output.rglob("results_*.json")
    return json.loads(saved.read_text())["results"]


def evaluate_task(model: Path, limit: int):
    from radd_cli.io.inference import load_for_inference
    from radd_cli.sampling import SamplingConfig, Strategy

    loaded = load_for_inference(str(model), "cpu")
    config = SamplingConfig(method="tweedie", strategy=Strategy("top_k", top_k=1))
    return task_scoring.evaluate_task(loaded.model, loaded.schedule, loaded.tokenizer, TASK, config, limit=limit)


def test_the_entry_point_names_the_adapter():
    from lm_eval.api.model import LM

    points = [p for p in metadata.entry_points(group="lm_eval.models") if p.name == "radd"]
    assert points and points[0].value == "radd_cli.evaluation.lmeval:RaddLM", "reinstall radd (pip install -e .)"
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
    # generation is radd's own: the same answers as `radd eval --task` (greedy, sample i with seed i)
    own = evaluate_task(sort_model, limit=60)
    assert results["radd_test_gen"]["exact_match,none"] == pytest.approx(own.accuracy), (results, own)
    assert results["radd_test_rolling"]["bits_per_byte,none"] > 0


def test_the_monte_carlo_likelihood_agrees_with_the_exact_one(tmp_path, sort_model):
    folder = write_tasks(tmp_path, multiple_choice_rows(30))
    exact = run_lm_eval(sort_model, folder, "radd_test_mc")["radd_test_mc"]["acc,none"]
    sampled = run_lm_eval(sort_model, folder, "radd_test_mc", ",likelihood=monte_carlo,mc_samples=32")
    assert abs(sampled["radd_test_mc"]["acc,none"] - exact) <= 0.2


def requests(kind: str, *arguments) -> list:
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, argument, index) for index, argument in enumerate(arguments)]


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_generation_stops_at_stop_strings_and_max_tokens_and_likelihoods_are_exact(tiny_checkpoint, precision):
    """In each precision, the adapter answers and scores exactly as radd's own functions do in that precision."""
    from radd_cli.device import Work, autocast, resolve_precision
    from radd_cli.evaluation import conditional
    from radd_cli.evaluation.lmeval import RaddLM
    from radd_cli.sampling import SamplingConfig, Strategy, prompting

    device = "cuda:0" if not torch.cuda.is_available() else "cpu"
    lm = RaddLM(pretrained=str(tiny_checkpoint), device=device, precision=require(precision))
    assert lm.loaded.device.type == "cpu"  # lm-eval's default device falls back to the CPU
    assert lm.loaded.precision == resolve_precision(precision, "cpu", work=Work.eval)  # radd eval's rule
    greedy = SamplingConfig(method="tweedie", strategy=Strategy("top_k", top_k=1))
    [own] = prompting.respond(
        lm.loaded.model, lm.loaded.schedule, lm.tokenizer, greedy, ["The cat"], length=lm.length,
        precision=lm.loaded.precision,
    )
    assert len(own.token_ids) > 4, "the tiny model answers at some length"
    [free] = lm.generate_until(requests("generate_until", ("The cat", {"until": [], "max_gen_toks": 12})))
    assert free == lm.tokenizer.decode(own.token_ids[:12])  # radd's own greedy answer (sample 0, seed 0)
    stop = lm.tokenizer.decode(own.token_ids[3:5])
    [cut] = lm.generate_until(requests("generate_until", ("The cat", {"until": ["\n", stop], "max_gen_toks": 12})))
    assert cut == free[: free.index(stop)] and stop not in cut
    [short] = lm.generate_until(requests("generate_until", ("The cat", {"until": [], "max_gen_toks": 2})))
    assert short == lm.tokenizer.decode(own.token_ids[:2])
    pairs = [("The cat", " sat on the"), ("", "The dog"), ("The owl sat ", "on the mat.")]
    scored = lm.loglikelihood(requests("loglikelihood", *pairs))
    for (context, continuation), (log_p, greedy) in zip(pairs, scored):
        head, tail = lm._pair(context, continuation)
        assert lm.tokenizer.decode(tail) == context[len(context.rstrip()) :] + continuation  # spaces move over
        assert head == (lm.tokenizer.encode(context.rstrip()) if context else [lm.tokenizer.eos_id])
        tokens, given = conditional.layout(head, tail, lm.length, lm.tokenizer.mask_id)
        with autocast(lm.loaded.device, lm.loaded.precision):
            exact, flag = conditional.exact(lm.loaded.model, tokens[None], given[None])
        assert log_p == pytest.approx(float(exact)) and greedy == bool(flag) and log_p < 0
    [rolling] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", ("The cat sat on the mat. " * 4,)))
    assert rolling < 0


def test_non_finite_log_likelihoods_are_an_error_never_a_score(tiny_checkpoint, tmp_path):
    """A NaN made lm-eval's argmax pick the first choice and report accuracy 1.0 with exit 0."""
    from radd_cli.errors import NonFiniteError
    from radd_cli.evaluation.lmeval import RaddLM

    lm = RaddLM(pretrained=str(tiny_checkpoint), device="cpu")
    with torch.no_grad():
        next(lm.loaded.model.parameters()).fill_(float("nan"))
    for likelihood in ("exact", "monte_carlo"):
        lm.likelihood = likelihood
        with pytest.raises(NonFiniteError, match="log-likelihood of request 0 .* is nan; .* no score is reported"):
            lm.loglikelihood(requests("loglikelihood", ("The cat", " sat"), ("The dog", " ran")))
    with pytest.raises(NonFiniteError):
        lm.loglikelihood_rolling(requests("loglikelihood_rolling", ("The cat sat on the mat.",)))


def test_bad_model_args_through_the_harness_command_line_are_one_line_and_exit_2(tiny_checkpoint, tmp_path):
    folder = write_tasks(tmp_path, multiple_choice_rows(4))
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    for model_args, message in (
        (f"pretrained={tiny_checkpoint},mc_samples=0", "Error: mc_samples: must be at least 1, got 0"),
        (f"pretrained={tiny_checkpoint},device=cuda:1", "Error: device is given twice"),
    ):
        command = [sys.executable, "-m", "radd_cli.lmeval", "--model", "radd", "--model_args", model_args]
        command += ["--tasks", "radd_test_mc", "--include_path", str(folder), "--device", "cpu"]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=folder)
        errors = [line for line in finished.stderr.splitlines() if " WARNING " not in line and " INFO " not in line]
        assert finished.returncode == 2 and "Traceback" not in finished.stderr, finished.stderr[-2000:]
        assert len(errors) == 1 and errors[0].startswith(message), finished.stderr[-2000:]
