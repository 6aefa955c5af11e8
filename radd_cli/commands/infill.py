"""`radd infill --model M`: fill the free spans of a prefix/suffix or a template; fixed tokens never change."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from radd_cli.commands import sampling_io
from radd_cli.errors import ConfigError
from radd_cli.sampling import SamplingConfig, templates


@sampling_io.generation_command
def infill(
    config: SamplingConfig,
    draw: sampling_io.DrawOptions,
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
) -> None:
    """Fill in text between fixed pieces. Generated spans are highlighted on a terminal."""
    if template is not None and (prefix is not None or suffix is not None):
        raise ConfigError("give either --template or --prefix/--suffix, not both")
    if template is not None and length is not None:
        raise ConfigError("--length goes with --prefix/--suffix; a --template sets its length with [MASK:n] spans")
    segments = templates.parse_template(template) if template is not None else None
    templates.check_text(prefix, "prefix")
    templates.check_text(suffix, "suffix")
    loaded = draw.load()
    if segments is not None:
        filled = templates.build_template(segments, loaded.tokenizer)
    else:
        length = length if length is not None else loaded.model.config.length
        filled = templates.prefix_suffix_template(prefix, suffix, length, loaded.tokenizer)
    request = draw.request(filled.length)
    result, seconds = sampling_io.draw(loaded, config, request, template=filled.tokens)
    spans = [filled.render(tokens, loaded.tokenizer) for tokens in result.sequences()]
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
        loaded,
        config,
        request,
        result,
        seconds,
        draw.model,
        draw.output,
        free_positions=filled.num_free,
        pieces=spans,
        extra=extra,
    )
