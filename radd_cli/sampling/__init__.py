# ruff: noqa: I001  (the order of the sampler imports is the order of the registry)
"""Samplers (docs/sampling.md): one `SamplingConfig` in, sequences and their network calls out.

    config = SamplingConfig(method="tweedie", steps=256, strategy=Strategy("top_p", top_p=0.9))
    result = generate(model, schedule, config, num_samples=8, length=128, seeds=range(8))

Every sampler is a class registered by name (`radd_cli.sampling.engine.register`) and runs on one
lockstep engine; `Method` lists them for the CLI and the recipes. `sample(model, schedule, **kwargs)`
is the same with the settings as keywords.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from radd_cli.core.schedule import Schedule
from radd_cli.device import Precision, Work, autocast, resolve_precision
from radd_cli.errors import ConfigError
from radd_cli.sampling import planned  # noqa: F401  (importing a module registers its samplers: tweedie, the default, first)
from radd_cli.sampling import confidence, remasking  # noqa: F401
from radd_cli.sampling.config import MAX_STEPS, Confidence, OrderName, Remasking, SamplingConfig
from radd_cli.sampling.engine import (
    SAMPLERS,
    Rows,
    Sampler,
    SampleResult,
    check_results_fit,
    model_device,
    register,
    resolve_seeds,
)
from radd_cli.sampling.nfe import expected_nfe, nfe_standard_deviation, unmask_step_distribution
from radd_cli.sampling.reference import sample_all_positions
from radd_cli.sampling.strategy import Strategy, StrategyName, draw_categorical
from radd_cli.sampling.pool import Job, RowPool, make_job, make_sampler, model_length
from radd_cli.validation import choices_of

Method = choices_of("Method", SAMPLERS, __name__)

__all__ = [
    "MAX_STEPS",
    "Confidence",
    "Job",
    "Method",
    "Remasking",
    "RowPool",
    "OrderName",
    "Rows",
    "SAMPLERS",
    "SampleResult",
    "Sampler",
    "SamplingConfig",
    "Strategy",
    "StrategyName",
    "draw_categorical",
    "expected_nfe",
    "generate",
    "make_job",
    "make_sampler",
    "model_length",
    "nfe_standard_deviation",
    "register",
    "sample",
    "sample_all_positions",
    "unmask_step_distribution",
]


def generate(
    model: nn.Module,
    schedule: Schedule,
    config: SamplingConfig,
    *,
    num_samples: int,
    length: int,
    template: torch.Tensor | None = None,
    seeds=None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    eos_id: int | None = None,
    progress: Callable[[float, int], None] | None = None,
    precision: Precision | str = Precision.auto,
) -> SampleResult:
    """Draw `num_samples` sequences of `length` tokens as `config` says.

    `template` (L,) holds token ids at fixed positions and mask_id at free ones; only free positions
    are sampled. A (num_samples, L) template gives each sample its own (prompts of several lengths). `seeds`
    gives each sample its own seed (reproducible alone, whatever the batch); otherwise the seeds are drawn from
    `generator` (or torch's global one). At most `batch_size` rows share a network call. A `length` beyond the
    model's is generated window by window (pool.py). `eos_id` is the end-of-text token that `config.stop_at_eos`
    trims at. `progress(done, total)` is called after each call, in samples. The network's trunk runs in
    `precision`, whose `auto` is what `radd sample` picks on this device (device.AUTO_PRECISION), so this call
    draws what the command does.
    """
    problems = [f"{name} must be at least 1, got {value}" for name, value in (("num_samples", num_samples), ("length", length)) if value < 1]
    if batch_size is not None and batch_size < 1:
        problems.append(f"batch_size must be at least 1, got {batch_size}")
    if problems:
        raise ConfigError(problems)
    check_results_fit(num_samples, length)
    seeds = resolve_seeds(seeds, num_samples, generator)
    job = make_job(model, schedule, config, length=length, seeds=seeds, template=template, eos_id=eos_id)
    device = torch.device(device) if device is not None else model_device(model)
    pool = RowPool(model, max_rows=batch_size or num_samples, device=device)
    pool.admit(job)
    with torch.inference_mode(), autocast(device, resolve_precision(precision, device.type, work=Work.sample)):
        while not job.finished:
            pool.step()
            if progress is not None:
                progress(pool.progress(job), num_samples)
    result = job.result()
    result.refreshes = getattr(job.sampler, "refreshes", None)  # with a key/value cache (kv_cache.py)
    return result


def sample(
    model: nn.Module,
    schedule: Schedule,
    *,
    num_samples: int,
    length: int,
    steps: int | None = None,
    method: str = "tweedie",
    strategy: str = "direct",
    top_p: float | None = None,
    top_k: int | None = None,
    temperature: float = 1.0,
    cache: bool = True,
    template: torch.Tensor | None = None,
    order=None,
    generator: torch.Generator | None = None,
    seeds=None,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    eos_id: int | None = None,
    progress: Callable[[float, int], None] | None = None,
    precision: Precision | str = Precision.auto,
    **settings,
) -> SampleResult:
    """`generate` with the settings as keywords: method, steps, strategy/top_p/top_k/temperature, cache,
    `order` (for `ordered`: forward, backward, random, or the positions (L,) or (N, L)), and any other
    SamplingConfig field (block_length, confidence, greedy, threshold, remasking, eta, guidance, stop_at_eos,
    batch_invariant); `precision` as for `generate`."""
    config = SamplingConfig(
        method=method,
        steps=steps,
        strategy=Strategy(strategy, top_p, top_k, temperature),
        order="forward" if order is None else order,
        cache=cache,
        **settings,
    )
    return generate(
        model,
        schedule,
        config,
        num_samples=num_samples,
        length=length,
        template=template,
        seeds=seeds,
        generator=generator,
        batch_size=batch_size,
        device=device,
        eos_id=eos_id,
        progress=progress,
        precision=precision,
    )
