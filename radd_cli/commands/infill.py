"""`radd infill --model M`: fill the free spans of a prefix/suffix or a template; fixed tokens never change."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from radd_cli import templates
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
from radd_cli.errors import ConfigError
from radd_cli.inference import load_for_inference
from radd_cli.runtime import Precision
from radd_cli.sampling import Method


def infill(
    model: ModelOption,
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="Text the samples start with.")] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Text the samples end with.")] = None,
    length: Annotated[
        Optional[int], typer.Option("--length", min=1, help="Total tokens, with --prefix/--suffix.")
    ] = None,
    template: Annotated[
        Optional[str],
        typer.Option(
            "--template",
            help='Text with free spans, e.g. "The [MASK:12] sat on the [MASK:3]." ([[ and ]] are literal brackets).',
        ),
    ] = None,
    num_samples: NumSamplesOption = 4,
    batch_size: BatchSizeOption = 16,
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
    """Fill in text between fixed pieces. Generated spans are highlighted on a terminal."""
    if template is not None and (prefix is not None or suffix is not None):
        raise ConfigError("give either --template or --prefix/--suffix, not both")
    if template is not None and length is not None:
        raise ConfigError("--length goes with --prefix/--suffix; a --template sets its length with [MASK:n] spans")
    sampling_io.check_output(output)
    segments = templates.parse_template(template) if template is not None else None
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
    if segments is not None:
        filled = templates.build_template(segments, loaded.tokenizer)
    else:
        length = length if length is not None else loaded.model.config.length
        filled = templates.prefix_suffix_template(prefix, suffix, length, loaded.tokenizer)
    templates.check_fits(filled, loaded.model.config.length)
    request = sampling_io.Request(num_samples, batch_size, filled.length, seed)
    result, seconds = sampling_io.draw(loaded, config, request, template=filled.tokens)
    spans = [filled.render(tokens, loaded.tokenizer) for tokens in result.tokens]
    extra = [
        {
            "template": template,
            "prefix": prefix,
            "suffix": suffix,
            "spans": [{"text": text, "generated": generated} for text, generated in pieces],
        }
        for pieces in spans
    ]
    sampling_io.report(
        loaded, config, request, result, seconds, model, output, free_positions=filled.num_free, pieces=spans, extra=extra
    )
