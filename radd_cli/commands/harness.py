"""`radd harness TASKS --model M`: lm-evaluation-harness on a radd model, with lm-eval's usual settings
(the lmeval extra; docs/fine-tuning.md). Prints lm-eval's table and writes its results as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from radd_cli.commands.options import (
    BatchSizeOption,
    DeviceOption,
    ForceOption,
    MethodOption,
    ModelOption,
    PrecisionOption,
    SeedOption,
    StepsOption,
    check_writable,
)
from radd_cli.console import out
from radd_cli.device import Precision
from radd_cli.errors import ConfigError, RaddError
from radd_cli.evaluation.conditional import Likelihood
from radd_cli.files import write_text
from radd_cli.sampling import Method

INSTALL = "pip install 'radd[lmeval]'"




def harness(
    tasks: Annotated[str, typer.Argument(help="lm-eval task or group names, comma-separated (lm_eval ls tasks).")],
    model: ModelOption,
    num_fewshot: Annotated[
        Optional[int], typer.Option("--num-fewshot", min=0, help="Examples in each prompt (default: the task's).")
    ] = None,
    limit: Annotated[
        Optional[float], typer.Option("--limit", min=0, help="The first N documents of each task (< 1: a fraction).")
    ] = None,
    batch_size: BatchSizeOption = 16,
    output_path: Annotated[
        Optional[Path], typer.Option("--output-path", "-o", help="Write lm-eval's results JSON to this file.")
    ] = None,
    include_path: Annotated[
        Optional[list[Path]], typer.Option("--include-path", help="A folder of local task YAMLs (repeatable).")
    ] = None,
    likelihood: Annotated[
        Likelihood, typer.Option("--likelihood", help="Log-likelihoods: exact, or Monte-Carlo (--mc-samples).")
    ] = Likelihood.exact,
    mc_samples: Annotated[int, typer.Option("--mc-samples", min=1, help="Draws per Monte-Carlo likelihood.")] = 64,
    method: MethodOption = Method.tweedie,
    steps: StepsOption = None,
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    force: ForceOption = False,
) -> None:
    """Run lm-evaluation-harness tasks on a radd model: its table on the screen, its results as JSON."""
    check_writable(output_path, "--output-path", force)
    for folder in include_path or []:
        if not folder.is_dir():
            raise ConfigError(f"--include-path {folder} is not a folder of task YAMLs")
    names = [name.strip() for name in tasks.split(",") if name.strip()]
    if not names:
        raise ConfigError("give at least one task, e.g. radd harness lambada_openai --model M")
    try:
        from lm_eval.utils import handle_non_serializable, make_table

        from radd_cli.evaluation import lmeval
    except ImportError:
        raise RaddError(f"radd harness needs lm-evaluation-harness, which is not installed: {INSTALL}") from None
    lm = lmeval.RaddLM(
        pretrained=model,
        device=device,
        precision=str(precision),
        batch_size=batch_size,
        likelihood=str(likelihood),
        mc_samples=mc_samples,
        method=str(method),
        steps=steps,
        seed=seed,
    )
    folders = [str(folder) for folder in include_path or []]
    results = lmeval.run(lm, names, num_fewshot=num_fewshot, limit=limit, include_path=folders)
    out.print(make_table(results), markup=False, highlight=False)
    if results.get("groups"):
        out.print(make_table(results, "groups"), markup=False, highlight=False)
    if output_path is not None:
        write_text(output_path, json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
        out.print(f"results written to {output_path}", highlight=False)
