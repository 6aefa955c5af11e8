"""`radd bench quality --model M`: every sampler's sample quality against its cost, measured honestly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from radd_cli.commands.bench_common import check_outputs, kv_modes, write_json
from radd_cli.commands.bench_plots import plot_quality
from radd_cli.commands.loading import load_model
from radd_cli.commands.options import (
    BatchSizeOption,
    CompileOption,
    DeviceOption,
    ForceOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
    SeedOption,
)
from radd_cli.console import err, out, progress_bar
from radd_cli.device import Precision, Work
from radd_cli.errors import ConfigError
from radd_cli.evaluation import sampler_sweep
from radd_cli.sampling import SAMPLERS, SamplingConfig, generate


def bench_quality(
    model: ModelOption,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", min=2, help="Samples per setting.")] = 256,
    batch_size: BatchSizeOption = 64,
    methods: Annotated[
        Optional[str],
        typer.Option("--methods", help="Sweep only these samplers, comma-separated (e.g. tweedie,threshold)."),
    ] = None,
    windows: Annotated[
        int, typer.Option("--windows", min=0, help="Also write this many model lengths window by window and compare the seams.")
    ] = 0,
    kv_cache: Annotated[
        str,
        typer.Option("--kv-cache", help="Run every block-decoding setting without the key/value cache and with each of "
                     "these modes (comma-separated: prefix, dual)."),
    ] = "none",
    seed: SeedOption = 0,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    json_path: JsonOption = None,
    force: ForceOption = False,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Write quality against network calls and wall time to this PNG.")
    ] = None,
    samples_alias: Annotated[Optional[int], typer.Option("--samples", min=2, hidden=True)] = None,  # 0.2's name
    only_alias: Annotated[Optional[str], typer.Option("--only", hidden=True)] = None,  # 0.2's name
    compile: CompileOption = False,
) -> None:
    """Sample quality against network calls and wall time for every sampler and a sweep of its settings.

    On the built-in Markov language (`radd train --recipe markov`) the samples are scored exactly: NLL per
    token under the true language, forbidden transitions and entropy; on other models, entropy and distinct-n.
    """
    samples = samples_alias if samples_alias is not None else num_samples
    chosen = _chosen_rows(only_alias if only_alias is not None else methods)
    modes = kv_modes(kv_cache)
    check_outputs(json_path, force, plot)
    loaded = load_model(model, device, precision, Work.sample, compile)
    length = loaded.model.config.length
    rows = sampler_sweep.sweep_rows(chosen, length, modes)
    if compile:
        loaded.warm_up(length, next((s["block_length"] for _, s in rows if "kv_cache" in s), None))
    with progress_bar(transient=True) as bar:
        task = bar.add_task("sweeping", total=len(rows))
        found = sampler_sweep.run_sweep(
            loaded, rows, num_samples=samples, batch_size=batch_size, length=length, seed=seed,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    exact = sampler_sweep.is_markov(loaded)
    reference = sampler_sweep.reference_row(samples, length, seed) if exact else None
    out.print(_table(found, reference, model, samples, length))
    payload = {
        "benchmark": "quality",
        "model": model,
        "task": "markov" if exact else "text",
        "samples": samples,
        "length": length,
        "kv_cache": modes,
        "rows": [vars(row) | {"label": row.label} for row in found],
        "reference": vars(reference) if reference else None,
    }
    if exact:
        payload["entropy_rate"] = sampler_sweep.markov.chain().entropy_rate()
        payload["matches_exact"] = _report_matches(found)
    if windows:
        payload["windows"] = _seams(loaded, windows, samples, batch_size, seed, exact)
    write_json(json_path, payload)
    if plot is not None:
        plot_quality(found, reference, plot)


def _chosen_rows(only: str | None) -> list[tuple[str, dict]]:
    if only is None:
        return sampler_sweep.SWEEP
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SAMPLERS]
    if not wanted or unknown:
        raise ConfigError(f"--only {only!r}: give samplers among {', '.join(SAMPLERS)}, comma-separated")
    return [(method, settings) for method, settings in sampler_sweep.SWEEP if method in wanted]


def _table(rows, reference, model: str, samples: int, length: int) -> Table:
    exact = reference is not None
    table = Table(title=f"radd bench quality: {model}, {samples} samples × {length} tokens per setting")
    columns = ["sampler", "calls/seq", "full calls/seq", "seconds", "entropy"]
    columns += ["NLL/token ± se", "forbidden % ± se"] if exact else ["distinct-2", "distinct-4"]
    for column in [*columns, "Pareto"]:
        table.add_column(column, justify="left" if column == "sampler" else "right")
    for row in [*rows, *([reference] if exact else [])]:
        full = row.full_calls_per_sequence if row.full_calls_per_sequence is not None else row.calls_per_sequence
        cells = [row.label, f"{row.calls_per_sequence:.1f}", f"{full:.1f}", f"{row.seconds:.2f}", f"{row.entropy:.3f}"]
        if exact:
            cells += [f"{row.nll_per_token:.4f} ± {row.nll_se:.4f}", f"{100 * row.forbidden_rate:.2f} ± {100 * row.forbidden_se:.2f}"]
        else:
            cells += [f"{row.distinct[2]:.3f}", f"{row.distinct[4]:.3f}"]
        table.add_row(*cells, "★" if row.pareto else "")
    return table


def _report_matches(rows) -> list[dict]:
    """Which settings match exact tweedie at 1024 steps (NLL and forbidden rate within two standard errors), and
    at what fraction of its calls and wall time."""
    references = [row for row in rows if (row.method, row.settings) == sampler_sweep.REFERENCE]
    if not references:
        return []
    reference = references[0]
    found = [
        {
            "label": row.label,
            "fewer_calls": reference.calls_per_sequence / row.calls_per_sequence,
            "less_time": reference.seconds / row.seconds,
        }
        for row in rows
        if row is not reference and sampler_sweep.matches(row, reference)
    ]
    shown = [f"{m['label']} ({m['fewer_calls']:.1f}× fewer calls, {m['less_time']:.1f}× less time)" for m in found]
    err.print(f"matching {reference.label} within two standard errors: " + ("; ".join(shown) if shown else "none"))
    return found


def _seams(loaded, windows: int, samples: int, batch_size: int, seed: int, exact: bool) -> dict:
    """Write `windows` model lengths window by window; compare forbidden transitions at seams and inside."""
    window = loaded.model.config.length
    length = windows * window
    result = generate(
        loaded.model, loaded.schedule, SamplingConfig(steps=window), num_samples=samples, length=length,
        seeds=range(seed, seed + samples), batch_size=batch_size, device=loaded.device, precision=loaded.precision,
    )
    found = {"length": length, "calls_per_sequence": result.nfe}
    if exact:
        at_seams, inside = sampler_sweep.seam_rates(result.tokens, window)
        found |= {"forbidden_rate_at_seams": at_seams, "forbidden_rate_inside": inside}
        err.print(
            f"{length} tokens window by window: forbidden transitions {100 * at_seams:.2f}% at window seams, "
            f"{100 * inside:.2f}% inside windows"
        )
    return found
