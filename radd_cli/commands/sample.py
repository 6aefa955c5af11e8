"""`radd sample --model M`: draw text from any RADD checkpoint."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from radd_cli.commands import sampling_io
from radd_cli.sampling import SamplingConfig


@sampling_io.generation_command
def sample(
    config: SamplingConfig,
    draw: sampling_io.DrawOptions,
    length: Annotated[
        Optional[int],
        typer.Option("--length", min=1, help="Tokens per sample (default: the model's; longer ones go window by window)."),
    ] = None,
) -> None:
    """Sample text. The same seed gives the same samples whatever --batch-size."""
    loaded = draw.load()
    length = length if length is not None else loaded.model.config.length
    request = draw.request(length)
    result, seconds = sampling_io.draw(loaded, config, request)
    sampling_io.report(loaded, config, request, result, seconds, draw.model, draw.output, free_positions=length)
