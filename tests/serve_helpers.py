"""A live `radd serve` for the serving tests: started on 127.0.0.1 and a free port, stopped with SIGTERM."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families

from radd_cli.io.inference import load_for_inference
from radd_cli.sampling import SamplingConfig, generate, templates

ROOT = Path(__file__).parents[1]
STARTUP_SECONDS = 120


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    log: Path

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def metrics(self) -> dict[str, float]:
        """Every sample of GET /metrics by name and labels, e.g. 'radd_requests_total{code=200,path=/health}'."""
        values = {}
        for family in text_string_to_metric_families(httpx.get(self.url + "/metrics").text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
        return values

    def wait_for(self, condition, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition(self.metrics()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}; log: {self.log.read_text()[-2000:]}"
            time.sleep(0.05)

    def terminate(self, seconds: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(seconds)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@contextlib.contextmanager
def running_server(model: Path, folder: Path, *options: str):
    """`radd serve --model MODEL --port 0 OPTIONS` in its own process, ready when this yields."""
    log = folder / f"server-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "radd_cli", "serve", "--model", str(model), "--port", "0", "--device", "cpu"]
    with open(log, "w") as errors:
        process = subprocess.Popen(
            [*command, *options], stdout=subprocess.PIPE, stderr=errors, text=True, cwd=ROOT, env={**os.environ}
        )
    try:
        server = LiveServer(first_line_url(process, log), process, log)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not healthy(server.url):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def first_line_url(process: subprocess.Popen, log: Path) -> str:
    """The address from `radd serve: http://HOST:PORT/v1 ...`, the one line the server prints on stdout."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    assert selector.select(STARTUP_SECONDS), f"the server printed no address; log: {log.read_text()[-2000:]}"
    line = process.stdout.readline()
    assert line.startswith("radd serve: http://"), (line, log.read_text()[-2000:])
    return line.split()[2].removesuffix("/v1")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


class Offline:
    """What `radd infill` / `radd sample` give for a template and seed: the same code, in this process."""

    def __init__(self, model: Path):
        self.loaded = load_for_inference(str(model), "cpu")
        self.tokenizer = self.loaded.tokenizer

    def infill(
        self, prompt: str, max_tokens: int, seeds: list[int], suffix: str | None = None, **settings
    ) -> list[str]:
        """The generated span's text for each seed (prompt and suffix around it, as `radd infill --prefix --suffix`)."""
        head = len(self.tokenizer.encode(prompt)) if prompt else 0
        tail = len(self.tokenizer.encode(suffix)) if suffix else 0
        filled = templates.prefix_suffix_template(prompt, suffix, head + max_tokens + tail, self.tokenizer)
        with self.loaded.autocast():  # the server's precision (bf16 on CPUs with native bf16)
            result = generate(
                self.loaded.model,
                self.loaded.schedule,
                SamplingConfig(**settings),
                num_samples=len(seeds),
                length=filled.length,
                template=filled.tokens,
                seeds=seeds,
            )
        return [self.tokenizer.decode(row[head : head + max_tokens].tolist()) for row in result.tokens]

    def tokens(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode(text))
