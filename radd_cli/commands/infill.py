"""`radd infill --model M`: fill the free spans of a prefix/suffix or a template; fixed tokens never change."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from radd_cli import templates
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
from radd_cli.errors import ConfigError
from radd_cli.inference import load_for_inference


def infill(
    model: ModelOption,
    prefix: Annotated[Optional[str], typer.Option("--prefix", help="Text the samples start with.")] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Text the samples end with.")] = None,
    length: Annotated[Optional[int], typer.Option("--length", help="Total tokens, with --prefix/--suffix.")] = None,
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
    """Fill in text between fixed pieces. Generated spans are highlighted on a terminal."""
    if template is not None and (prefix is not None or suffix is not None):
        raise ConfigError("give either --template or --prefix/--suffix, not both")
    if template is not None and length is not None:
        raise ConfigError("--length goes with --prefix/--suffix; a --template sets its length with [MASK:n] spans")
    generation.check_output(output)
    segments = templates.parse_template(template) if template is not None else None
    loaded = load_for_inference(model, device, dtype)
    if segments is not None:
        filled = templates.build_template(segments, loaded.tokenizer)
    else:
        length = length if length is not None else loaded.model.config.length
        filled = templates.prefix_suffix_template(prefix, suffix, length, loaded.tokenizer)
    templates.check_length(filled, loaded.model.config.length)
    settings = generation.settings_from_options(
        loaded,
        num_samples=num_samples,
        batch_size=batch_size,
        length=filled.length,
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
    result, seconds = generation.generate(loaded, settings, template=filled.tokens)
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
    generation.report(
        loaded, settings, result, seconds, model, output, free_positions=filled.num_free, pieces=spans, extra=extra
    )
