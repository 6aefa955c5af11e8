"""`radd sample --model M`: draw text from any RADD checkpoint."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from radd_cli.commands import generation
from radd_cli.commands.options import (
    BatchSizeOption,
    DeviceOption,
    DtypeOption,
    MethodOption,
    ModelOption,
    NoCacheOption,
    NumSamplesOption,
    OrderOption,
    OutputOption,
    SeedOption,
    StepsOption,
    StrategyOption,
    TemperatureOption,
    TopKOption,
    TopPOption,
)
from radd_cli.inference import load_for_inference


def sample(
    model: ModelOption,
    num_samples: NumSamplesOption = 4,
    batch_size: BatchSizeOption = 16,
    length: Annotated[Optional[int], typer.Option("--length", help="Tokens per sample (default: the model's).")] = None,
    steps: StepsOption = None,
    method: MethodOption = "tweedie",
    order: OrderOption = "forward",
    strategy: StrategyOption = None,
    top_p: TopPOption = None,
    top_k: TopKOption = None,
    temperature: TemperatureOption = 1.0,
    no_cache: NoCacheOption = False,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "auto",
    output: OutputOption = None,
) -> None:
    """Sample text. The same seed gives the same samples whatever --batch-size."""
    generation.check_output(output)
    loaded = load_for_inference(model, device, dtype)
    settings = generation.settings_from_options(
        loaded,
        num_samples=num_samples,
        batch_size=batch_size,
        length=length,
        steps=steps,
        method=method,
        order=order,
        strategy=strategy,
        top_p=top_p,
        top_k=top_k,
        temperature=temperature,
        no_cache=no_cache,
        seed=seed,
    )
    result, seconds = generation.generate(loaded, settings)
    generation.report(loaded, settings, result, seconds, model, output, free_positions=settings.length)
