"""Served throughput and latency of `radd serve` against offline sampling at the same total batch.

A tiny random model (the `tiny` size of `radd bench`: width 64, 2 blocks, length 128, with a BPE
tokenizer of 2048 tokens trained on the Python documentation) is saved to a temporary folder and served
by `radd serve` in its own process. For C concurrent clients (official openai client, one thread each,
requests one after another), every request asks for one unconditional sequence of the model's length
(radd's template "[MASK:128]", the default 128 steps with the cache) with its own seed. Offline is
`radd_cli.generate` — what `radd sample -n N --batch-size C` runs — on the same seeds with batch size C.
Both use `--threads` torch threads (1 by default: on a 2-core machine that is shared, two OpenMP threads
per process make every run many times slower and the numbers meaningless). Rounds interleave offline and
served runs; the table shows medians. Served texts are checked equal to the offline ones.

    python benchmarks/serve_throughput.py                       # 1, 4 and 16 clients, 3 rounds
    python benchmarks/serve_throughput.py --clients 16 --rounds 1 --json serve.json
    python benchmarks/serve_throughput.py --clients 16 --block-length 32 --kv-cache dual   # with the key/value cache

With --block-length and --kv-cache, both sides decode by blocks with that cache (the server's defaults, and
the offline SamplingConfig). Offline runs in the server's precision (auto: bf16 on CPUs with native bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import pydoc_data.topics
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))

from radd_cli.bench.timing import SIZES  # noqa: E402
from radd_cli.core.model import RADD, ModelConfig  # noqa: E402
from radd_cli.files import write_text  # noqa: E402
from radd_cli.io.inference import load_for_inference  # noqa: E402
from radd_cli.io.pretrained import save  # noqa: E402
from radd_cli.io.tokenizer import train_tokenizer  # noqa: E402
from radd_cli.sampling import SamplingConfig, generate  # noqa: E402
from tests.serve_helpers import running_server  # noqa: E402


def tiny_model(folder: Path) -> Path:
    tokenizer = train_tokenizer(list(pydoc_data.topics.topics.values()), SIZES["tiny"]["vocab_size"])
    config = ModelConfig(**{**SIZES["tiny"], "vocab_size": tokenizer.vocab_size}, dropout=0.0)
    save(RADD(config), folder, noise={"type": "loglinear", "eps": 1e-3}, tokenizer=tokenizer.hf)
    return folder


def offline(loaded, seeds: list[int], batch_size: int, config: SamplingConfig) -> tuple[float, list[str]]:
    started = time.perf_counter()
    with loaded.autocast():
        result = generate(
            loaded.model,
            loaded.schedule,
            config,
            num_samples=len(seeds),
            length=loaded.model.config.length,
            seeds=seeds,
            batch_size=batch_size,
        )
    seconds = time.perf_counter() - started
    return seconds, [loaded.tokenizer.decode(row.tolist()) for row in result.tokens]


def served(api: str, seeds: list[int], clients: int, length: int) -> tuple[float, list[float], list[str]]:
    """Wall seconds, per-request latencies, and texts in seed order."""
    client = openai.OpenAI(base_url=api, api_key="none", max_retries=0, timeout=600)
    queue, lock, latencies, texts = list(seeds), threading.Lock(), [], {}

    def work() -> None:
        while True:
            with lock:
                if not queue:
                    return
                seed = queue.pop(0)
            started = time.perf_counter()
            response = client.completions.create(
                model="tiny", prompt="", seed=seed, extra_body={"template": f"[MASK:{length}]"}
            )
            with lock:
                latencies.append(time.perf_counter() - started)
                texts[seed] = response.choices[0].text

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(work) for _ in range(clients)]:
            future.result()
    return time.perf_counter() - started, latencies, [texts[seed] for seed in seeds]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, offline and in the server")
    parser.add_argument("--block-length", type=int, help="decode by blocks of this many positions (server and offline)")
    parser.add_argument("--kv-cache", default="none", choices=["none", "prefix", "dual"], help="with --block-length")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = SamplingConfig(block_length=args.block_length, kv_cache=args.kv_cache)
    sampling = ["--kv-cache", args.kv_cache] + (["--block-length", str(args.block_length)] if args.block_length else [])
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the server's process
    with tempfile.TemporaryDirectory() as scratch:
        model = tiny_model(Path(scratch) / "tiny")
        loaded = load_for_inference(str(model), "cpu")
        length = loaded.model.config.length
        batch = str(max(args.clients))
        options = ["--name", "tiny", "--max-batch-size", batch, "--log-level", "warning", *sampling]
        with running_server(model, Path(scratch), *options) as live:
            served(live.api, list(range(4)), 4, length)  # warm up
            runs = {c: {"offline": [], "served": [], "latency": []} for c in args.clients}
            for round_ in range(args.rounds):
                for clients in args.clients:
                    seeds = list(range(1000 * round_, 1000 * round_ + clients * args.requests_per_client))
                    offline_seconds, expected = offline(loaded, seeds, clients, config)
                    served_seconds, latencies, texts = served(live.api, seeds, clients, length)
                    assert texts == expected, "a served sample differs from its offline sample"
                    tokens = len(seeds) * length
                    runs[clients]["offline"].append(tokens / offline_seconds)
                    runs[clients]["served"].append(tokens / served_seconds)
                    runs[clients]["latency"] += latencies
            live.terminate()
    report(runs, args)


def report(runs: dict, args) -> None:
    rows = []
    print("clients  served tok/s  offline tok/s (batch = clients)  served/offline  latency p50  p95")
    for clients, run in runs.items():
        served_rate, offline_rate = statistics.median(run["served"]), statistics.median(run["offline"])
        p50, p95 = percentile(run["latency"], 0.5), percentile(run["latency"], 0.95)
        rows.append(
            {
                "clients": clients,
                "served_tokens_per_s": served_rate,
                "offline_tokens_per_s": offline_rate,
                "ratio": served_rate / offline_rate,
                "latency_p50_s": p50,
                "latency_p95_s": p95,
                "requests": len(run["latency"]),
            }
        )
        print(
            f"{clients:7d}  {served_rate:12,.0f}  {offline_rate:31,.0f}  {served_rate / offline_rate:14.0%}"
            f"  {p50:9.2f} s  {p95:.2f} s"
        )
    print("served samples identical to offline ones for the same seeds: yes")
    if args.json:
        settings = {"block_length": args.block_length, "kv_cache": args.kv_cache}
        write_text(args.json, json.dumps({"rounds": args.rounds, **settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
