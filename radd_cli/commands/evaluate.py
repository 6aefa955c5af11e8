"""`radd eval`: zero-shot perplexity with error bars (--model --dataset), or generative quality
(--samples --judge): judge perplexity always reported with unigram entropy and distinct-n."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.table import Table

from radd_cli.commands.loading import load_model
from radd_cli.commands.options import (
    BatchSizeOption,
    CompileOption,
    DeviceOption,
    ForceOption,
    JsonOption,
    MethodOption,
    PrecisionOption,
    SeedOption,
    StepsOption,
    check_writable,
)
from radd_cli.commands.relaunch import relaunch_on_gpus
from radd_cli.commands.task_eval import evaluate_task
from radd_cli.console import err, out, progress_bar
from radd_cli.core.losses import Loss
from radd_cli.data import sources, tokens
from radd_cli.data.tasks import TaskName
from radd_cli.device import Precision, Work
from radd_cli.errors import ConfigError, DataError
from radd_cli.evaluation.perplexity import DEFAULT_MC_SAMPLES, PerplexityReport, evaluate_perplexity
from radd_cli.files import write_text
from radd_cli.sampling import Method, SamplingConfig, Strategy
from radd_cli.training.launch import launched_as_one_of_many
from radd_cli.training.runtime import build_runtime


def evaluate(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model folder or Hub id to evaluate.")] = None,
    dataset: Annotated[
        Optional[str],
        typer.Option("--dataset", "-d", help=f"{', '.join(sources.DATASETS)}, builtin, markov, task:NAME, or a local file/folder."),
    ] = None,
    split: Annotated[
        Optional[str], typer.Option("--split", help="Default: test (openwebtext: validation; local: all).")
    ] = None,
    length: Annotated[
        Optional[int], typer.Option("--length", min=1, help="Block length (default: the model's).")
    ] = None,
    batch_size: BatchSizeOption = 16,
    loss: Annotated[Loss, typer.Option("--loss", help="The objective (ar_* are exact, L calls per block).")] = Loss.lambda_DCE,
    mc_samples: Annotated[
        int,
        typer.Option("--mc-samples", min=1, help=f"Monte-Carlo draws per block (published: {DEFAULT_MC_SAMPLES})."),
    ] = DEFAULT_MC_SAMPLES,
    target_se: Annotated[
        Optional[float],
        typer.Option("--target-se", help="Stop adding draws once the standard error of NLL/token is below this."),
    ] = None,
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    force: ForceOption = False,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    compile: CompileOption = False,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs of this machine to shard the blocks over.")] = 1,
    cache_dir: Annotated[str, typer.Option("--cache-dir", help="Where tokenized data is cached.")] = tokens.DEFAULT_CACHE,
    samples: Annotated[
        Optional[Path], typer.Option("--samples", help="A .jsonl from radd sample, for generative quality.")
    ] = None,
    judge: Annotated[
        Optional[str], typer.Option("--judge", help="A causal LM (name or folder) that scores --samples.")
    ] = None,
    task: Annotated[
        Optional[TaskName], typer.Option("--task", help="Exact match on a built-in task's held-out prompts.")
    ] = None,
    limit: Annotated[
        Optional[int], typer.Option("--limit", min=1, help="With --task: answer only the first N prompts.")
    ] = None,
    method: MethodOption = Method.tweedie,
    steps: StepsOption = None,
    top_k: Annotated[
        int, typer.Option("--top-k", min=1, help="With --task: draw from the k most likely tokens (1 = greedy).")
    ] = 1,
) -> None:
    """Zero-shot perplexity of a model on a dataset, generative perplexity and entropy of samples, or exact
    match on a task's held-out prompts (--task; --method, --steps and --top-k set the decoding)."""
    if task is not None:
        if dataset is not None or samples is not None or judge is not None:
            raise ConfigError("give --model with --task (exact match), without --dataset, --samples or --judge")
        if model is None:
            raise ConfigError("--task needs --model: the model to answer the prompts")
        check_writable(json_path, "--json", force)
        config = SamplingConfig(method=method, steps=steps, strategy=Strategy("top_k", top_k=top_k))
        return evaluate_task(model, task, split or "test", limit, config, batch_size, seed, json_path, device, precision)
    if samples is not None or judge is not None:
        if model is not None or dataset is not None:
            raise ConfigError("give --model and --dataset (perplexity) or --samples and --judge (generative), not both")
        if samples is None or judge is None:
            raise ConfigError("generative evaluation needs both --samples FILE.jsonl and --judge MODEL")
        check_writable(json_path, "--json", force)
        return _generative(samples, judge, batch_size, device, json_path)
    if model is None or dataset is None:
        raise ConfigError("give --model and --dataset (or --samples and --judge); see radd eval --help")
    check_writable(json_path, "--json", force)
    if gpus > 1 and not launched_as_one_of_many():
        raise typer.Exit(relaunch_on_gpus(gpus, sys.argv[1:]))
    _perplexity(
        model,
        dataset,
        split,
        length,
        batch_size,
        loss,
        mc_samples,
        target_se,
        seed,
        json_path,
        device,
        precision,
        cache_dir,
        compile,
    )


def _perplexity(
    model, dataset, split, length, batch_size, loss, mc_samples, target_se, seed, json_path, device, precision, cache_dir,
    compile,
) -> None:
    origin = sources.source(dataset)
    split = split or origin.scored_split
    origin.check_split(split)  # before the model is loaded
    runtime = build_runtime(precision, cpu=device == "cpu") if launched_as_one_of_many() else None
    loaded = load_model(model, str(runtime.device) if runtime else device, precision, Work.eval, compile)
    length = length if length is not None else loaded.model.config.length
    if length > loaded.model.config.length:
        raise ConfigError(f"--length {length} is longer than the model's training length {loaded.model.config.length}")
    blocks, given = tokens.load_blocks(dataset, split, loaded.tokenizer, length, cache_dir)
    is_main = runtime is None or runtime.is_main
    with progress_bar(transient=True) as bar:
        task = bar.add_task("evaluating", total=None, visible=is_main)
        report = evaluate_perplexity(
            loaded.model,
            loaded.schedule,
            blocks,
            given=given,  # prompts of prompt/response data are conditioned on, never scored
            loss=loss,
            mc_samples=mc_samples,
            batch_size=batch_size,
            seed=seed,
            target_se=target_se,
            device=loaded.device,
            precision=loaded.precision,
            rank=runtime.rank if runtime else 0,
            world_size=runtime.world_size if runtime else 1,
            all_reduce=runtime.sum if runtime else None,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if not is_main:
        return
    _print_report(report, model, dataset, split)
    if dataset == "wikitext2" and split == "test":
        err.print("note: the published WikiText2 numbers were computed on --split train")
    if json_path is not None:
        settings = {
            "model": model,
            "dataset": dataset,
            "split": split,
            "mc_samples": mc_samples,
            "seed": seed,
            "target_se": target_se,
            "batch_size": batch_size,
            "device": str(loaded.device),
            "precision": str(loaded.precision),
            "torch": torch.__version__,
        }
        write_text(json_path, json.dumps(settings | report.to_dict(), indent=2) + "\n")


def _print_report(report: PerplexityReport, model: str, dataset: str, split: str) -> None:
    low, high = report.perplexity_interval
    table = Table(title=f"{model} on {dataset} ({split})", show_header=False)
    table.add_row("perplexity", f"{report.perplexity:.3f}  (95% interval {low:.3f} – {high:.3f})")
    monte_carlo = (
        "n/a with one draw per block" if report.monte_carlo_error is None else f"± {report.monte_carlo_error:.4f}"
    )
    table.add_row(
        "NLL per token",
        f"{report.nll_per_token:.4f} ± {report.standard_error:.4f} nats (Monte-Carlo part {monte_carlo})",
    )
    table.add_row("bits per token", f"{report.bits_per_token:.4f}")
    table.add_row("objective", report.loss)
    table.add_row("data", f"{report.num_blocks} blocks × {report.length} = {report.num_tokens:,} tokens")
    table.add_row("draws", f"{report.total_draws:,} ({report.draws_per_block} or more per block)")
    table.add_row("time", f"{report.seconds:.1f} s, {report.tokens_per_second:,.0f} tokens/s")
    out.print(table)


def _generative(samples: Path, judge: str, batch_size: int, device: str, json_path: Path | None) -> None:
    from radd_cli.device import pick_device
    from radd_cli.evaluation.sample_quality import generative_metrics, load_judge

    texts, token_ids = read_samples(samples)
    judge_model, judge_tokenizer = load_judge(judge, pick_device(device))
    report = generative_metrics(texts, token_ids, judge_model, judge_tokenizer, batch_size=batch_size)
    table = Table(title=f"{len(texts)} samples from {samples}, judged by {judge}")
    for column in ("sample", "perplexity", "entropy (nats)", "judge tokens"):
        table.add_column(column, justify="right")
    for i, (ppl, entropy, count) in enumerate(zip(report.perplexity, report.entropy, report.num_tokens)):
        table.add_row(str(i), f"{ppl:.2f}", f"{entropy:.3f}", str(count))
    out.print(table)
    distinct = ", ".join(f"distinct-{n} {value:.3f}" for n, value in report.distinct.items())
    out.print(
        f"generative perplexity {report.token_weighted_perplexity:.3f} (token-weighted; mean of samples "
        f"{report.mean_perplexity:.3f}) with unigram entropy {report.mean_entropy:.3f} nats; {distinct}"
    )
    if json_path is not None:
        write_text(json_path, json.dumps({"samples": str(samples), "judge": judge} | report.to_dict(), indent=2) + "\n")


def read_samples(path: Path) -> tuple[list[str], list[list[int]] | None]:
    """Texts and (when every row has them) token ids from a radd sample .jsonl file."""
    if path.is_dir():
        raise DataError(f"--samples {path} is a folder; give the .jsonl file that radd sample --output wrote")
    if not path.is_file():
        raise DataError(f"--samples {path}: no such file; write one with `radd sample --output FILE.jsonl`")
    try:
        text = path.read_text(encoding="utf-8-sig")  # without a byte-order mark
    except UnicodeDecodeError as error:
        raise DataError(f"--samples {path} is not UTF-8 text (byte {error.start}); give a .jsonl file") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(
                    f"{path} line {number} is not JSON; expected the .jsonl that radd sample writes"
                ) from None
    if not rows or not all(isinstance(row, dict) and isinstance(row.get("text"), str) for row in rows):
        raise DataError(f"{path}: expected JSON lines with a `text` field, as radd sample --output FILE.jsonl writes")
    ids = [row.get("token_ids") for row in rows]
    return [row["text"] for row in rows], ids if all(isinstance(i, list) for i in ids) else None
