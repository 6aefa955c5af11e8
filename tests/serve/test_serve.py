"""`radd serve` against a live server on 127.0.0.1 and a free port, driven by the official openai client."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.sampling import SAMPLERS
from tests.cli_helpers import assert_clean_error
from tests.conftest import require
from tests.serve_helpers import Offline, running_server

KEY = "test-key"
STEPS = 8  # the server's default --steps; the offline runs use the same
MAX_BATCH = 32
LONG = {"cache": False, "steps": 100_000}  # a request that would run for minutes
COMPLETIONS = "radd_requests_total{code=200,path=/v1/completions}"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    options = ["--name", "tiny", "--api-key", KEY, "--steps", str(STEPS), "--max-batch-size", str(MAX_BATCH)]
    with running_server(
        tiny_checkpoint, tmp_path_factory.mktemp("serve"), *options, "--max-request-bytes", "65536"
    ) as live:
        yield live
        assert live.terminate() == 0, live.log.read_text()[-2000:]
        assert "radd serve: stopped" in live.log.read_text()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.api, api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def offline(tiny_checkpoint):
    return Offline(tiny_checkpoint)


def texts(response) -> list[str]:
    return [choice.text for choice in response.choices]


@pytest.mark.precision
def test_completions_equal_the_offline_samples_of_their_seeds(client, offline):
    response = client.completions.create(model="tiny", prompt="The cat", max_tokens=6, n=3, seed=11)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert [c.seed for c in response.choices] == [11, 12, 13]
    assert texts(response) == offline.infill("The cat", 6, [11, 12, 13], steps=STEPS)
    assert all(c.finish_reason == "length" and 1 <= c.nfe <= STEPS for c in response.choices)
    assert response.object == "text_completion" and response.model == "tiny" and response.id.startswith("cmpl-")
    prompt_tokens = len(offline.tokenizer.encode("The cat"))
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (prompt_tokens, 18)
    assert response.usage.total_tokens == prompt_tokens + 18


def test_a_list_of_prompts_gives_n_choices_each_with_seed_plus_index(client, offline):
    prompts = ["The cat", "The dog sat"]
    response = client.completions.create(
        model="tiny", prompt=prompts, max_tokens=5, n=2, seed=5, extra_body={"steps": 4}
    )
    assert [c.seed for c in response.choices] == [5, 6, 7, 8]
    expected = offline.infill(prompts[0], 5, [5, 6], steps=4) + offline.infill(prompts[1], 5, [7, 8], steps=4)
    assert texts(response) == expected


def test_infill_via_suffix_is_radd_infill_with_prompt_and_suffix_unchanged(client, offline, tiny_checkpoint, tmp_path):
    prompt, suffix, span = "The fox", " It was happy.", 5
    response = client.completions.create(
        model="tiny", prompt=prompt, suffix=suffix, max_tokens=span, n=2, seed=3, extra_body={"method": "euler"}
    )
    length = len(offline.tokenizer.encode(prompt)) + span + len(offline.tokenizer.encode(suffix))
    output = tmp_path / "infill.jsonl"
    command = [
        "infill",
        "--model",
        str(tiny_checkpoint),
        "--prefix",
        prompt,
        "--suffix",
        suffix,
        "--length",
        str(length),
    ]
    result = CliRunner().invoke(
        app, [*command, "--method", "euler", "--steps", str(STEPS), "--seed", "3", "-n", "2", "-o", str(output)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    for row, choice in zip(rows, response.choices, strict=True):
        assert row["text"] == prompt + choice.text + suffix
        assert [s["text"] for s in row["spans"]] == [prompt, choice.text, suffix]
        assert row["nfe"] == choice.nfe and row["seed"] == choice.seed


def test_a_template_of_one_span_is_radd_sample(client, tiny_checkpoint, tmp_path):
    output = tmp_path / "sample.jsonl"
    command = [
        "sample",
        "--model",
        str(tiny_checkpoint),
        "--length",
        "16",
        "--steps",
        str(STEPS),
        "--seed",
        "2",
        "-n",
        "2",
    ]
    assert CliRunner().invoke(app, [*command, "-o", str(output)]).exit_code == 0
    response = client.completions.create(model="tiny", prompt="", n=2, seed=2, extra_body={"template": "[MASK:16]"})
    assert texts(response) == [json.loads(line)["text"] for line in output.read_text().splitlines()]


SAMPLER_REQUESTS = {  # every registered sampler, with settings of its own
    "tweedie": {"block_length": 4},
    "euler": {"cache": False},
    "ordered": {"order": "random"},
    "first_hitting": {},
    "confidence": {"confidence": "margin", "greedy": True},
    "threshold": {"threshold": 0.5},
    "remdm": {"eta": 0.1, "remasking": "rescale"},
}


@pytest.mark.precision
def test_every_sampler_is_served_as_offline_and_guidance_and_stop_at_eos_too(client, offline):
    assert set(SAMPLER_REQUESTS) == set(SAMPLERS)
    cached = ("threshold", {"threshold": 0.5, "block_length": 4, "kv_cache": "dual"})  # the key/value cache, served
    for method, settings in [*SAMPLER_REQUESTS.items(), ("tweedie", {"guidance": 1.5}), cached]:
        body = {"method": method, **settings}
        response = client.completions.create(
            model="tiny", prompt="The cat", max_tokens=9, n=2, seed=31, extra_body=body
        )
        steps = STEPS if "steps" in SAMPLERS[method].settings else None  # the server's --steps, where it applies
        assert texts(response) == offline.infill("The cat", 9, [31, 32], steps=steps, **body), method
    eos = offline.tokenizer.decode([offline.tokenizer.eos_id])
    unconditional = dict(model="tiny", prompt="", n=16, seed=3)
    plain = client.completions.create(**unconditional, extra_body={"template": "[MASK:16]"})
    cut = client.completions.create(**unconditional, extra_body={"template": "[MASK:16]", "stop_at_eos": True})
    assert texts(cut) == [text.split(eos)[0] for text in texts(plain)]
    with pytest.raises(openai.BadRequestError, match="guidance"):
        client.completions.create(model="tiny", prompt="", extra_body={"template": "[MASK:4]", "guidance": 1.0})
    with pytest.raises(openai.BadRequestError, match="threshold"):
        client.completions.create(model="tiny", prompt="The", extra_body={"method": "threshold"})


def stream(client, **request) -> tuple[dict[int, list[str]], list]:
    """The text pieces of each choice, and every chunk."""
    pieces, chunks = {}, []
    for chunk in client.completions.create(model="tiny", stream=True, **request):
        chunks.append(chunk)
        for choice in chunk.choices:
            pieces.setdefault(choice.index, []).append(choice.text)
    return pieces, chunks


@pytest.mark.parametrize("method", ["tweedie", "ordered"])
def test_streamed_deltas_add_up_to_the_text_without_streaming(client, method):
    request = dict(prompt="The", max_tokens=10, n=2, seed=4, extra_body={"method": method})
    whole = client.completions.create(model="tiny", **request)
    pieces, chunks = stream(client, **request, stream_options={"include_usage": True})
    assert {i: "".join(p) for i, p in pieces.items()} == {c.index: c.text for c in whole.choices}
    if method == "ordered":  # left to right, one position per call: the text grows call by call
        assert all(sum(1 for p in parts if p) >= 3 for parts in pieces.values())
    finals = [c for chunk in chunks for c in chunk.choices if c.finish_reason is not None]
    assert sorted((c.index, c.finish_reason, c.nfe, c.seed) for c in finals) == [
        (c.index, "length", c.nfe, c.seed) for c in whole.choices
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_the_denoising_stream_shows_the_whole_text_after_every_call(client):
    request = dict(prompt="The", max_tokens=8, seed=6)
    whole = client.completions.create(model="tiny", **request, extra_body={"steps": 4})
    pieces, _ = stream(client, **request, extra_body={"steps": 4, "stream_mode": "denoising"})
    assert "[MASK]" in pieces[0][0] and pieces[0][-1] == whole.choices[0].text


def test_stop_strings_cut_the_text_streamed_or_not(client):
    request = dict(prompt="The", max_tokens=12, seed=9, extra_body={"method": "ordered"})
    text = client.completions.create(model="tiny", **request).choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = client.completions.create(model="tiny", stop=[stop, "never there"], **request).choices[0]
    assert (cut.text, cut.finish_reason) == (text[: text.find(stop)], "stop")
    pieces, _ = stream(client, stop=stop, **request)
    assert "".join(pieces[0]) == cut.text


BAD_REQUESTS = {
    "malformed JSON": (b'{"model": "tiny", "prompt": ', 400, None),
    "not an object": (b'["tiny"]', 400, None),
    "unknown field": ({"stpes": 3}, 400, "stpes"),
    "OpenAI field of the wrong type": ({"n": "2"}, 400, "n"),
    "radd field of the wrong type": ({"steps": "many"}, 400, "steps"),
    "unknown sampler": ({"method": "nope"}, 400, "method"),
    "order given as a path": ({"method": "ordered", "order": "/etc/passwd"}, 400, "order"),
    "zero temperature": ({"temperature": 0}, 400, "temperature"),
    "unsupported logprobs": ({"logprobs": 2}, 400, "logprobs"),
    "negative seed": ({"seed": -1}, 400, "seed"),
    "max_tokens beyond the model": ({"max_tokens": 100}, 400, "max_tokens"),
    "empty prompt without suffix": ({"prompt": ""}, 400, "prompt"),
    "n above the limit": ({"n": MAX_BATCH + 1}, 400, "n"),
    "unknown model": ({"model": "gpt-4"}, 404, "model"),
    "token ids as the prompt": ({"prompt": [464, 3797]}, 400, "prompt"),
    "blocks that do not divide the length": ({"block_length": 5}, 400, "block_length"),
    "a template longer than the model": ({"prompt": "", "template": "[MASK:40]"}, 400, "template"),
    "body too large": ({"prompt": "x" * 70_000}, 413, None),
    # hostile bodies that were a plain-text 500, or failed every request in flight
    "nesting past 16 levels": (b'{"model": "tiny", "prompt": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, None),
    "an integer of 5000 digits": (b'{"model": "tiny", "prompt": "a", "n": ' + b"9" * 5000 + b"}", 400, None),
    "an integer past 2^64": ({"max_tokens": 10**30}, 400, "max_tokens"),
    "order positions past int64": ({"method": "ordered", "order": [2**63] * 16}, 400, "order"),
    "guidance that overflows": ({"guidance": 1.7e308}, 400, "guidance"),
    "a remasking probability above one": ({"method": "remdm", "eta": 1e308}, 400, "eta"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_bad_requests_get_their_status_and_an_openai_error_object(server, case):
    body, status, param = BAD_REQUESTS[case]
    content = body if isinstance(body, bytes) else json.dumps({"model": "tiny", "prompt": "The", **body}).encode()
    response = httpx.post(server.api + "/completions", content=content, headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["param"] == param
    assert "--" not in error["message"] and len(error["message"]) < 300  # fields, not flags; values quoted short


def test_bad_requests_do_not_disturb_the_requests_being_served(server, client, offline):
    slow = {"cache": False, "steps": 64}  # a call per step: still running while the bad requests arrive

    def good(seed: int) -> str:
        request = dict(prompt="The cat", max_tokens=8, seed=seed, extra_body=slow)
        if seed % 2:
            return "".join(stream(client, **request)[0][0])
        return client.completions.create(model="tiny", **request).choices[0].text

    headers = {"Authorization": f"Bearer {KEY}"}
    with ThreadPoolExecutor(4) as pool:
        answers = pool.map(good, range(20, 24))
        for body, status, _ in BAD_REQUESTS.values():
            content = body if isinstance(body, bytes) else json.dumps({"model": "tiny", "prompt": "The", **body})
            assert httpx.post(server.api + "/completions", content=content, headers=headers).status_code == status
        assert list(answers) == offline.infill("The cat", 8, list(range(20, 24)), **slow)


def test_the_api_key_is_required_and_checked(server, client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = httpx.post(server.api + "/completions", json={"model": "tiny", "prompt": "The"}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.api, api_key="wrong", max_retries=0).completions.create(
            model="tiny", prompt="The"
        )
    assert httpx.get(server.url + "/health").status_code == 200  # health and metrics need no key
    assert [m.id for m in client.models.list().data] == ["tiny"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="tiny", prompt="The", max_tokens=100)


def test_metrics_parse_and_count_what_was_served(server, client):
    before = server.metrics()
    response = client.completions.create(model="tiny", prompt="The cat", max_tokens=6, n=2, seed=1)
    after = server.metrics()
    assert after[COMPLETIONS] == before.get(COMPLETIONS, 0) + 1
    assert after["radd_generated_tokens_total"] == before["radd_generated_tokens_total"] + 12
    assert after["radd_network_calls_total"] >= before["radd_network_calls_total"] + max(
        c.nfe for c in response.choices
    )
    assert after["radd_queue_depth"] == 0 and after["radd_rows_in_flight"] == 0
    assert after["radd_tokens_per_second"] > 0 and after["radd_request_latency_seconds_count"] >= 1


def leave_after(seconds: float, url: str, body: dict) -> threading.Thread:
    """A client that sends `body` and hangs up after `seconds` without an answer."""

    def post() -> None:
        with contextlib.suppress(httpx.ReadTimeout):
            httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=seconds)

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def test_health_answers_during_generation_and_a_client_that_leaves_has_its_rows_removed(server):
    before = server.metrics()["radd_cancelled_rows_total"]
    body = {"model": "tiny", "prompt": "The", "max_tokens": 10, **LONG}
    leaving = leave_after(3, server.api + "/completions", body)
    server.wait_for(lambda m: m["radd_rows_in_flight"] >= 1, "the request to join the batch")
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert server.metrics()["radd_rows_in_flight"] >= 1  # /health answered while the network ran
    leaving.join()
    server.wait_for(lambda m: m["radd_rows_in_flight"] == 0 and m["radd_cancelled_rows_total"] == before + 1, "removal")
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", server.api + "/completions", json={**body, "stream": True, "stream_mode": "denoising"}, headers=headers
    ) as events:
        assert next(events.iter_lines()).startswith("data: ")
    server.wait_for(lambda m: m["radd_rows_in_flight"] == 0 and m["radd_cancelled_rows_total"] == before + 2, "removal")


@pytest.mark.precision
@pytest.mark.parametrize("precision", ["default", "fp32", "bf16"])
def test_load_64_requests_from_16_clients_each_equal_to_its_offline_sample(
    server, client, offline, tiny_checkpoint, tmp_path, precision
):
    """Prompts of different lengths (separate network calls), streamed and not, joining and leaving the batch:
    with the server's defaults (auto, batch-invariant), and with each precision asked for explicitly."""
    if precision == "default":
        load(server, client, offline, {})
        return
    options = ["--name", "tiny", "--steps", str(STEPS), "--max-batch-size", str(MAX_BATCH)]
    with running_server(tiny_checkpoint, tmp_path, *options, "--precision", require(precision)) as pinned:
        pinned_client = openai.OpenAI(base_url=pinned.api, api_key="none", max_retries=0, timeout=120)
        load(pinned, pinned_client, offline, {"precision": precision})
        assert pinned.terminate() == 0, pinned.log.read_text()[-2000:]


def load(server, client, offline, settings: dict) -> None:
    """64 requests from 16 clients; each answer must be the offline sample of its seed with `settings`."""
    prompts = [("The cat", 6), ("The dog sat on", 4), ("It was", 9), ("The owl", 5)]
    jobs = [(k, *prompts[k % 4], 1000 + k) for k in range(64)]
    before = server.metrics().get(COMPLETIONS, 0)

    def ask(job) -> tuple[int, int, str]:
        k, prompt, span, seed = job
        if k % 3 == 0:
            pieces, chunks = stream(client, prompt=prompt, max_tokens=span, seed=seed)
            return k, chunks[-1].choices[0].seed, "".join(pieces[0])
        response = client.completions.create(model="tiny", prompt=prompt, max_tokens=span, seed=seed)
        return k, response.choices[0].seed, response.choices[0].text

    with ThreadPoolExecutor(16) as clients:
        answers = list(clients.map(ask, jobs))
    assert sorted(k for k, _, _ in answers) == list(range(64))  # nothing lost, nothing twice
    expected = {}
    for prompt, span in prompts:
        ks = [k for k, p, _, _ in jobs if p == prompt]
        expected |= dict(zip(ks, offline.infill(prompt, span, [1000 + k for k in ks], steps=STEPS, **settings)))
    assert [(seed, text) for _, seed, text in answers] == [(1000 + k, expected[k]) for k in range(64)]
    assert server.metrics()[COMPLETIONS] == before + 64


@pytest.mark.slow
def test_full_queue_gets_429_and_sigterm_finishes_or_cancels_what_runs(tiny_checkpoint, tmp_path):
    options = ["--name", "tiny", "--max-batch-size", "3", "--max-queue", "1", "--shutdown-timeout", "10"]
    with running_server(tiny_checkpoint, tmp_path, *options) as live:
        url, results = live.api + "/completions", {}

        def post(name, **body):
            request = {"model": "tiny", "prompt": "The", "max_tokens": 6, "seed": 1, **body}
            with httpx.stream("POST", url, json=request, timeout=120) as response:
                results[name] = (response.status_code, response.read().decode())

        def start(name, **body) -> threading.Thread:
            thread = threading.Thread(target=post, args=(name,), kwargs=body)
            thread.start()
            return thread

        threads = [start("endless", **LONG), start("endless stream", **LONG, stream=True)]
        live.wait_for(lambda m: m["radd_rows_in_flight"] == 2, "two rows in flight")
        waiting = leave_after(2, url, {"model": "tiny", "prompt": "The", "n": 2})  # 2 rows: no room for it
        live.wait_for(lambda m: m["radd_queue_depth"] == 1, "a request in the queue")
        full = httpx.post(url, json={"model": "tiny", "prompt": "The"})
        assert full.status_code == 429 and full.headers["Retry-After"] and full.json()["error"]["code"] == "queue_full"
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=live.api, api_key="none", max_retries=0).completions.create(
                model="tiny", prompt="The"
            )
        waiting.join()  # its client left: it leaves the queue
        live.wait_for(lambda m: m["radd_queue_depth"] == 0, "the queue to empty")
        threads.append(start("medium", cache=False, steps=200))
        live.wait_for(lambda m: m["radd_rows_in_flight"] == 3, "three rows in flight")
        assert live.terminate() == 0
        for thread in threads:
            thread.join(60)
    assert results["medium"][0] == 200  # it was running when SIGTERM came, and finished
    medium = json.loads(results["medium"][1])["choices"][0]
    assert (medium["finish_reason"], medium["nfe"], len(medium["text"]) > 0) == ("length", 200, True)
    assert results["endless"][0] == 503 and "shutting down" in json.loads(results["endless"][1])["error"]["message"]
    events = [line for line in results["endless stream"][1].splitlines() if line]
    assert "shutting down" in events[-2] and events[-1] == "data: [DONE]"
    assert "radd serve: stopped" in live.log.read_text()


def test_without_the_serve_extra_the_error_names_it(monkeypatch, tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = CliRunner().invoke(app, ["serve", "--model", str(tiny_checkpoint)])
    assert_clean_error(result, "pip install 'radd[serve]'", exit_code=1)


def test_a_port_in_use_is_a_clean_error_before_the_model_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nowhere"), "--port", str(port)])
    assert_clean_error(result, f"cannot listen on 127.0.0.1:{port}", exit_code=1)
