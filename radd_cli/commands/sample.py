"""`radd sample --model M`: draw text from any RADD checkpoint."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from radd_cli.commands import sampling_io
from radd_cli.commands.options import (
    BatchSizeOption,
    DeviceOption,
    MethodOption,
    ModelOption,
    NoCacheOption,
    NumSamplesOption,
    OrderOption,
    OutputOption,
    PrecisionOption,
    SeedOption,
    StepsOption,
    StrategyOption,
    TemperatureOption,
    TopKOption,
    TopPOption,
)
from radd_cli.inference import load_for_inference
from radd_cli.runtime import Precision
from radd_cli.sampling import Method


def sample(
    model: ModelOption,
    num_samples: NumSamplesOption = 4,
    batch_size: BatchSizeOption = 16,
    length: Annotated[
        Optional[int], typer.Option("--length", min=1, help="Tokens per sample (default: the model's).")
    ] = None,
    steps: StepsOption = None,
    method: MethodOption = Method.tweedie,
    order: OrderOption = "forward",
    strategy: StrategyOption = None,
    top_p: TopPOption = None,
    top_k: TopKOption = None,
    temperature: TemperatureOption = 1.0,
    no_cache: NoCacheOption = False,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    output: OutputOption = None,
) -> None:
    """Sample text. The same seed gives the same samples whatever --batch-size."""
    sampling_io.check_output(output)
    config = sampling_io.sampling_config(
        method=method,
        steps=steps,
        order=order,
        strategy=strategy,
        top_p=top_p,
        top_k=top_k,
        temperature=temperature,
        no_cache=no_cache,
    )
    loaded = load_for_inference(model, device, precision)
    length = length if length is not None else loaded.model.config.length
    sampling_io.check_length(loaded, length)
    request = sampling_io.Request(num_samples, batch_size, length, seed)
    result, seconds = sampling_io.draw(loaded, config, request)
    sampling_io.report(loaded, config, request, result, seconds, model, output, free_positions=length)
