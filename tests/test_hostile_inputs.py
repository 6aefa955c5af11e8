"""Hostile input, everywhere radd takes it.

- Every command, driven with generated bad values for each numeric and path option, fails the same way:
  exit 1 or 2, a short message and no traceback, and no file that existed before is changed.
- Every command that writes a file at a path the user names refuses an existing one without --force,
  before any work (exit 2).
- `radd serve`, fuzzed over its request schema (Hypothesis), never answers a client's mistake with a 5xx,
  always with a JSON error object that names fields, while good requests in flight get exactly their
  offline samples and the server stays healthy.
- The lm-eval adapter checks its model_args like the command line: one-line errors, never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radd_cli.cli import app

runner = CliRunner()

# Bad values by kind of option. Each is wrong for every option of its kind.
COUNTS = ["0", "-3", "1.5", "abc", "", "nan"]  # whole numbers of at least 1
HUGE_COUNTS = [str(10**12)]  # numbers of samples, steps or tokens nobody can hold
SEEDS = ["-1", "1e23", str(2**64), "x"]
PROBABILITIES = ["0", "-0.1", "1.5", "nan", "inf", "p"]  # (0, 1]
POSITIVE_FLOATS = ["0", "-1", "nan", "inf", "warm"]


def option_cases(command: list[str], options: dict[str, list[str]]) -> list[tuple[list[str], str]]:
    return [([*command, option, value], f"{' '.join(command[:2])} {option}={value!r}") for option, values in options.items() for value in values]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint):
    """A folder with a model, data, outputs that already exist and the odd files a hostile user brings."""
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(tiny_checkpoint, root / "model")
    (root / "corpus.txt").write_text("\n\n".join(f"The cat sat on mat {i}." for i in range(60)))
    (root / "existing.jsonl").write_text('{"text": "keep me"}\n')
    (root / "existing.json").write_text("{}\n")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (root / "huge_order.txt").write_text(str(10**30))
    (root / "huge_positions.txt").write_text(" ".join([str(2**63)] * 16))
    (root / "user_recipe").mkdir()
    (root / "user_recipe" / "recipe.json").write_text('{"mine": true}\n')
    (root / "folder").mkdir()
    (root / "empty").mkdir()
    (root / "user").mkdir()
    (root / "user" / "notes.txt").write_text("mine")
    os.mkfifo(root / "pipe.txt")
    (root / "bad_rows.jsonl").write_text('{"prompt": "The cat", "response": " sat."}\n{"prompt": "The dog"}\n')
    (root / "empty.jsonl").write_text("")
    (root / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    return root


def cases(root: Path) -> list[tuple[list[str], str]]:
    model = ["--model", str(root / "model")]
    bad_paths = {
        "--model": [str(root / "nowhere"), str(root / "corpus.txt"), str(root / "empty"), str(root / "binary.txt")],
        "--output": [str(root / "folder"), str(root / "nowhere" / "x.jsonl"), str(root / "x.csv")],
    }
    found = []
    for verb in ("sample", "infill"):
        base = [verb, *model] + (["--prefix", "The cat"] if verb == "infill" else [])
        found += option_cases(
            base,
            {
                "--num-samples": COUNTS + HUGE_COUNTS,
                "--batch-size": COUNTS,
                "--steps": COUNTS + HUGE_COUNTS,
                "--length": COUNTS + HUGE_COUNTS,
                "--seed": SEEDS,
                "--top-k": COUNTS,
                "--top-p": PROBABILITIES,
                "--temperature": POSITIVE_FLOATS,
                "--output": [*bad_paths["--output"], str(root / "existing.jsonl")],
                "--block-length": COUNTS + ["5"],  # 5 divides no length of the model (16)
                "--guidance": ["-1", "nan", "inf", "x", "1e30", "1.7e308"],  # a huge weight overflowed to NaN
            },
        )
        found += option_cases([verb, "--prefix", "x"] if verb == "infill" else [verb], {"--model": bad_paths["--model"]})
        found += option_cases(
            [*base, "--method", "ordered"],
            {"--order": [str(root / "nowhere.txt"), str(root / "binary.txt"), str(root / "huge_order.txt"), str(root / "folder")]},
        )
    serve = ["serve", *model, "--port", "0"]  # every case fails before the server would start
    found += option_cases(
        serve,
        {
            "--port": ["-1", "65536", "x", ""],
            "--max-batch-size": COUNTS,
            "--max-queue": COUNTS,
            "--max-request-bytes": COUNTS,
            "--shutdown-timeout": ["-1", "nan", "inf", "x"],
            "--steps": COUNTS + HUGE_COUNTS,
            "--top-k": COUNTS,
            "--top-p": PROBABILITIES,
            "--temperature": POSITIVE_FLOATS,
            "--host": ["no-such-host.invalid", "256.0.0.1"],
        },
    )
    found += option_cases(["serve", "--port", "0"], {"--model": bad_paths["--model"]})
    found += option_cases(["sample", *model, "--method", "threshold"], {"--threshold": PROBABILITIES})
    found += option_cases(["sample", *model, "--method", "remdm"], {"--eta": ["-1", "nan", "inf", "x", "1.5", "1e308"]})
    found += option_cases(["sample", *model, "--method", "ordered"], {"--order": [str(root / "huge_positions.txt")]})
    found += option_cases(
        ["sample", *model],
        {
            "--prompt": ["The cat sat on the mat. " * 8, "\udcff"],
            "--prompts": [
                str(root / p)
                for p in ("nowhere.jsonl", "pipe.txt", "binary.txt", "folder", "empty.jsonl", "existing.jsonl", "x.csv")
            ],
        },
    )
    found += option_cases(["sample", *model, "--prompt", "The cat"], {"--length": COUNTS + HUGE_COUNTS + ["2"]})
    found += option_cases(["sample", *model, "--prompt", "The cat", "--chat"], {"--num-samples": ["1"]})
    found += option_cases(
        ["infill", *model],
        {"--template": ["[MASK:0]", "[MASK:10000000000]", "no spans here", "[MASK:x]", "bad \udcff [MASK:2]"], "--prefix": ["\udcff"]},
    )
    data = ["--model", str(root / "model"), "--dataset", str(root / "corpus.txt"), "--cache-dir", str(root / "cache")]
    found += option_cases(
        ["eval", *data],
        {
            "--mc-samples": COUNTS,
            "--batch-size": COUNTS,
            "--length": COUNTS + HUGE_COUNTS,
            "--target-se": POSITIVE_FLOATS,
            "--seed": SEEDS,
            "--gpus": ["0", "-3", "x"],
            "--json": [str(root / "folder"), str(root / "nowhere" / "r.json"), str(root / "existing.json")],
        },
    )
    found += option_cases(
        ["eval", "--model", str(root / "model"), "--cache-dir", str(root / "cache")],
        {"--dataset": [str(root / "nowhere.txt"), str(root / "pipe.txt"), str(root / "binary.txt"), str(root / "empty")]},
    )
    found += option_cases(
        ["eval", "--judge", str(root / "empty")],
        {"--samples": [str(root / "folder"), str(root / "binary.txt"), str(root / "nowhere.jsonl"), str(root / "corpus.txt")]},
    )
    found += option_cases(["eval", "--samples", str(root / "existing.jsonl")], {"--judge": [str(root / "empty")]})
    found += option_cases(
        ["eval", *model, "--task", "sort"],
        {
            "--limit": COUNTS,
            "--top-k": COUNTS,
            "--steps": COUNTS,
            "--split": ["dev", "all"],
            "--json": [str(root / "folder")],
        },
    )
    found += option_cases(["eval", *model], {"--task": ["nope", "task:sort", ""]})
    found += option_cases(["eval", "--task", "sort"], {"--model": bad_paths["--model"]})
    found += [(["eval", "--task", "sort", *model, "--dataset", "builtin"], "eval --task with --dataset")]
    for verb, extra in (("sample", {"--steps": ["0", "a,b", "", "-1"], "--repeats": COUNTS}), ("eval", {"--batches": COUNTS})):
        found += option_cases(
            ["bench", verb, *model],
            {"--batch-size": COUNTS, "--length": COUNTS + HUGE_COUNTS, "--json": [str(root / "folder"), str(root / "existing.json")], **extra},
        )
    found += option_cases(
        ["bench", "train", "--size", "tiny", "--length", "16", "--batch-size", "4"],
        {"--steps": COUNTS, "--warmup": ["-1", "x"], "--accumulation": ["0", "3"], "--batch-size": COUNTS},
    )
    train = ["train", f"tokenizer.name={root / 'model'}", f"data.train={root / 'corpus.txt'}", f"data.cache_dir={root / 'cache'}"]
    for override in (
        "training.lr=inf",
        "training.lr=-1",
        "training.batch_size=0",
        "training.batch_size=100000000",
        "model.length=0",
        "training.steps=abc",
        "training.ema=1.5",
        f"data.train={root / 'nowhere.txt'}",
        f"data.train={root / 'pipe.txt'}",
        f"data.train={root / 'binary.txt'}",
        f"data.train={root / 'bad_rows.jsonl'}",
        f"data.train={root / 'empty.jsonl'}",
        f"data.train={root / 'binary.jsonl'}",
        "data.train=task:nope",
        "data.packing=zip",
        f"training.init_from={root / 'nowhere'}",
        f"training.init_from={root / 'corpus.txt'}",
        f"training.init_from={root / 'model'}",
        f"training.init_from={root / 'empty'}",
    ):
        found.append(([*train, override, "--run-dir", str(root / "runs" / "r")], f"train {override}"))
    run_dirs = [str(root / "user"), str(root / "corpus.txt"), str(root / "user_recipe")]  # a recipe.json alone: the user's
    found += option_cases(train, {"--run-dir": run_dirs, "--recipe": [str(root / "nowhere.toml"), str(root / "binary.txt"), str(root / "folder")]})
    found += option_cases([*train, "--restart"], {"--run-dir": [str(root / "user"), str(root / "user_recipe")]})
    if importlib.util.find_spec("wandb") is None:
        found.append(([*train, 'logging.trackers=["wandb"]', "--run-dir", str(root / "runs" / "w")], "train without wandb"))
    dry_run = [*train, "--dry-run"]
    found += option_cases(dry_run, {"--gpus": ["0", "-3", "x", "3"], "--recipe": [str(root / "nowhere.toml")]})
    for override in ("training.sharding=zero3", "training.activation_checkpointing=maybe", "training.batch_size=0"):
        found.append(([*dry_run, override], f"train --dry-run {override}"))
    found += option_cases(["recipes", "tiny"], {"--copy": ["/proc/radd-recipe.toml", str(root / "nowhere" / "r.toml"), str(root / "existing.json")]})
    found += [(["recipes", "nosuch"], "recipes nosuch")]
    found += option_cases(["convert", str(root / "model")], {"": [str(root / "corpus.txt"), str(root / "user")]})
    found += [(["convert", str(p), str(root / "out")], f"convert {p.name}") for p in (root / "nowhere", root / "corpus.txt", root / "empty")]
    return [(args if args[-2] != "" else [*args[:-2], args[-1]], name) for args, name in found]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_fifo() and "cache" not in p.parts and "runs" not in p.parts
    }


def test_every_command_fails_cleanly_on_bad_values_and_changes_no_file(world, monkeypatch):
    monkeypatch.chdir(world)
    all_cases = cases(world)
    assert len(all_cases) >= 250
    before = snapshot(world)
    failures = []
    for args, name in all_cases:
        result = runner.invoke(app, args)
        lines = result.output.strip().splitlines()
        if (
            result.exit_code not in (1, 2)
            or not isinstance(result.exception, SystemExit)
            or "Traceback" in result.output
            or not lines
            or len(lines) > 3
            or not lines[-1].startswith("Error: ")
        ):
            failures.append(f"{name}: exit {result.exit_code}, {result.exception!r}, output {result.output[-300:]!r}")
    assert not failures, "\n".join(failures)
    assert snapshot(world) == before


# Every command that writes a file at a path the user names: (arguments, the option, the existing file). The
# model is one that does not exist, so the refusal shows the check comes before any loading.
def output_cases(root: Path) -> dict[str, tuple[list[str], str, Path]]:
    nowhere = str(root / "nowhere")
    jsonl, json_file, png, toml = (root / name for name in ("existing.jsonl", "existing.json", "existing.png", "existing.toml"))
    return {
        "sample --output": (["sample", "--model", nowhere], "--output", jsonl),
        "infill --output": (["infill", "--model", nowhere, "--prefix", "The"], "--output", jsonl),
        "eval --json": (["eval", "--model", nowhere, "--dataset", "builtin"], "--json", json_file),
        "eval --task --json": (["eval", "--model", nowhere, "--task", "sort"], "--json", json_file),
        "eval --samples --json": (["eval", "--samples", str(jsonl), "--judge", nowhere], "--json", json_file),
        "bench sample --json": (["bench", "sample", "--model", nowhere], "--json", json_file),
        "bench sample --plot": (["bench", "sample", "--model", nowhere], "--plot", png),
        "bench eval --json": (["bench", "eval", "--model", nowhere], "--json", json_file),
        "bench train --json": (["bench", "train", "--model", nowhere, "--sharding", "fsdp"], "--json", json_file),
        "bench quality --json": (["bench", "quality", "--model", nowhere], "--json", json_file),
        "bench quality --plot": (["bench", "quality", "--model", nowhere], "--plot", png),
        "recipes --copy": (["recipes", "tiny"], "--copy", toml),
    }


def test_every_command_refuses_to_replace_an_existing_file_without_force_before_any_work(world, monkeypatch):
    monkeypatch.chdir(world)
    for path, text in ((world / "existing.png", "a plot of mine"), (world / "existing.toml", "# my recipe\n")):
        path.write_text(text)
    before = snapshot(world)
    for name, (args, option, existing) in output_cases(world).items():
        refused = runner.invoke(app, [*args, option, str(existing)])
        assert refused.exit_code == 2, (name, refused.output)
        assert f"{existing} exists; pass --force" in refused.output and "Traceback" not in refused.output, name
        forced = runner.invoke(app, [*args, option, str(existing), "--force"])
        assert "exists; pass --force" not in forced.output, (name, forced.output)  # --force passes the check...
        assert name == "recipes --copy" or forced.exit_code != 0, (name, forced.output)  # ...and meets the model
    assert {k: v for k, v in snapshot(world).items() if k != "existing.toml"} == {
        k: v for k, v in before.items() if k != "existing.toml"
    }
    assert (world / "existing.toml").read_text().startswith("# ")  # replaced by the recipe, with --force only


# --- radd serve: a property-based fuzzer over the request schema ---------------------------------------------

KEY = "fuzz-key"
FUZZED_REQUESTS = 250  # CI's budget: well under a minute on two cores
STEPS = 8
GOOD = {"model": "tiny", "prompt": "The cat", "max_tokens": 4}
NUMBERS = [0, 1, -1, 2, 5, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**64), 10**30, 10**300]
FLOATS = [0.0, -0.0, 0.5, 1.0, 1.5, 1e-320, 5e-324, 1e30, 1.7e308, float("inf"), float("-inf"), float("nan")]
WORDS = ["tweedie", "remdm", "confidence", "ordered", "threshold", "forward", "random", "top_k", "top_p", "direct",
         "prefix", "denoising", "[MASK:4]", "[MASK:99999999999]", "The [MASK:3] sat", "", " ", "\x00", "tiny", "é"]


def fuzz_strategies():
    from hypothesis import strategies as st

    from radd_cli.serve.completions import RADD_FIELDS
    from radd_cli.serve.wire import CompletionRequest

    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(-3, 6), st.sampled_from(NUMBERS), st.sampled_from(FLOATS),
        st.floats(), st.sampled_from(WORDS), st.text(max_size=12),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
        max_leaves=10,
    )
    names = st.sampled_from(sorted({*CompletionRequest.model_fields, *RADD_FIELDS, "unknown", ""}))
    edited = st.dictionaries(names, values, min_size=1, max_size=4).map(lambda fields: {**GOOD, **fields})
    as_json = st.one_of(edited, edited, edited, values).map(lambda body: json.dumps(body).encode())
    raw = st.one_of(
        st.binary(max_size=40),
        st.sampled_from([
            b'{"model": "tiny", "prompt": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b'{"model": "tiny", "prompt": "a", "n": ' + b"9" * 5000 + b"}",
            b'{"model": "tiny", "prompt": "a", "method": "ordered", "order": [' + b"9" * 40 + b"]}",
            b'{"model": "tiny", "prompt": "a", "temperature": NaN}',
            b"\xef\xbb\xbf" + json.dumps(GOOD).encode(),
        ]),
    )
    return st.one_of(as_json, raw)


def assert_a_proper_answer(response, body: bytes) -> None:
    """Never a 5xx for what a client sent; an error is an OpenAI error object naming fields, not flags."""
    assert response.status_code < 500, (body[:300], response.status_code, response.text[:500])
    if response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.rstrip().endswith("data: [DONE]"), response.text[-300:]
        return
    assert response.headers["content-type"].startswith("application/json"), (body[:300], response.text[:300])
    answer = response.json()
    if response.status_code == 200:
        assert answer["object"] == "text_completion" and answer["choices"], answer
        return
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str), answer
    assert len(error["message"]) < 1000 and "\n" not in error["message"], error["message"]
    assert not re.search(r"(^|[\s(])--[a-z]", error["message"]), error["message"]  # request fields, not CLI flags


@pytest.fixture(scope="module")
def fuzz_server(tiny_checkpoint, tmp_path_factory):
    from tests.serve_helpers import running_server

    # fp32: in bf16 on a CPU with AMX a row's log-probs depend on the rows it shares a call with (the kernels
    # block by batch size), so one in 30 good rows beside fuzzed ones drew another token than offline
    options = ["--name", "tiny", "--api-key", KEY, "--steps", str(STEPS), "--max-batch-size", "32"]
    options += ["--precision", "fp32"]
    with running_server(tiny_checkpoint, tmp_path_factory.mktemp("fuzz"), *options) as live:
        yield live
        assert live.terminate() == 0, live.log.read_text()[-2000:]


def test_fuzzed_requests_get_json_errors_never_5xx_and_good_requests_beside_them_are_untouched(
    fuzz_server, tiny_checkpoint, monkeypatch
):
    pytest.importorskip("hypothesis", reason="the test extra: pip install -e '.[test]'")
    import httpx
    from hypothesis import HealthCheck, given, settings

    from tests.serve_helpers import Offline

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = fuzz_server.api + "/completions"
    seeds, answers, stop = iter(range(10**6)), [], threading.Event()

    def good_client() -> None:  # a client with good requests the whole time the fuzzer runs
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                seed = next(seeds)
                response = http.post(url, json={**GOOD, "max_tokens": 6, "seed": seed}, headers=headers)
                answers.append((seed, response.status_code, response.json()))

    @settings(max_examples=FUZZED_REQUESTS, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(fuzz_strategies())
    def fuzz(body: bytes) -> None:
        assert_a_proper_answer(http.post(url, content=body, headers=headers), body)

    client = threading.Thread(target=good_client)
    with httpx.Client(timeout=120) as http:
        client.start()
        try:
            fuzz()
        finally:
            stop.set()
            client.join(120)
        assert http.get(fuzz_server.url + "/health").status_code == 200
        after = http.post(url, json={**GOOD, "seed": 7}, headers=headers)
        assert after.status_code == 200, after.text
    assert answers and all(status == 200 for _, status, _ in answers), answers[:3]
    monkeypatch.setenv("RADD_NATIVE_BF16", "0")  # fp32, as the server
    offline = Offline(tiny_checkpoint)
    for seed, _, answer in answers:
        assert answer["choices"][0]["text"] == offline.infill("The cat", 6, [seed], steps=STEPS)[0], seed
    metrics = fuzz_server.metrics()
    assert not any(name.startswith("radd_requests_total{code=5") and value for name, value in metrics.items()), metrics


def test_malformed_http_gets_a_clean_400_and_the_server_goes_on(fuzz_server):
    import httpx

    host, port = fuzz_server.url.removeprefix("http://").split(":")
    body = json.dumps(GOOD).encode()
    requests = {
        "bad Content-Length": b"Content-Length: abc\r\n\r\n" + body,
        "negative Content-Length": b"Content-Length: -5\r\n\r\n" + body,
        "two Content-Lengths": b"Content-Length: 5\r\nContent-Length: 7\r\n\r\n" + body,
        "a huge header": b"X-Big: " + b"a" * 200_000 + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        "bad chunks": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    }
    for name, rest in requests.items():
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + rest)
            reply = connection.recv(4096)
        assert reply.startswith(b"HTTP/1.1 400 "), (name, reply[:200])
    assert httpx.get(fuzz_server.url + "/health").status_code == 200


# --- the lm-eval adapter ---------------------------------------------------------------------------------------

def test_the_lm_eval_adapter_refuses_bad_model_args_in_one_line_before_loading(world):
    pytest.importorskip("lm_eval", reason="the lmeval extra")
    from radd_cli.errors import RaddError
    from radd_cli.evaluation.lmeval import RaddLM

    model = world / "model"
    harness = {"batch_size": 1, "max_batch_size": None, "device": "cuda:0"}  # what lm-eval passes by default
    cases = {
        "": "pretrained is missing",
        f"pretrained={world / 'nowhere'}": "no such folder",
        f"pretrained={world / 'corpus.txt'}": "is a file; give the model folder",
        f"pretrained={world / 'empty'}": "is not a model folder",
        f"pretrained={model},foo=1": "unknown key 'foo'",
        f"pretrained={model},method=nope": "'nope' is not one of",
        f"pretrained={model},steps=0": "steps: must be at least 1",
        f"pretrained={model},steps=-3": "steps: must be at least 1",
        f"pretrained={model},steps=1e30": "steps: expected int",
        f"pretrained={model},method=ordered,steps=4": "not to ordered",
        f"pretrained={model},batch_size=0": "batch_size: must be at least 1",
        f"pretrained={model},batch_size=lots": "batch_size: expected int",
        f"pretrained={model},likelihood=guess": "likelihood: 'guess' is not one of",
        f"pretrained={model},likelihood=monte_carlo,mc_samples=0": "mc_samples: must be at least 1",
        f"pretrained={model},rolling_samples=-1": "rolling_samples: must be at least 1",
        f"pretrained={model},seed=-1": "seed: must be at least 0",
        f"pretrained={model},precision=fp8": "precision: 'fp8' is not one of",
    }
    for arguments, message in cases.items():
        with pytest.raises(RaddError, match=re.escape(message)) as raised:
            RaddLM.create_from_arg_string(arguments, harness)
        assert "\n" not in str(raised.value), arguments
    clash = {**harness, "device": "cpu"}
    clashing = "device is given twice: device='cuda:1' in model_args and 'cpu' as lm-eval's device option"
    with pytest.raises(RaddError, match=clashing):
        RaddLM.create_from_arg_string(f"pretrained={model},device=cuda:1", clash)
    with pytest.raises(RaddError, match="batch_size is given twice"):
        RaddLM.create_from_arg_obj({"pretrained": str(model), "batch_size": 8}, {**harness, "batch_size": "4"})
    lm = RaddLM.create_from_arg_string(f"pretrained={model},batch_size=8,device=cpu", harness)  # defaults give way
    assert lm.batch_size == 8 and lm.loaded.device.type == "cpu"
