"""Zero-shot perplexity with error bars (docs/evaluation.md).

PPL = exp(NLL), NLL = mean over blocks b of m_b, m_b = (mean over draws k of the objective) / L.
The standard error of NLL is std_b(m_b) / sqrt(B): each m_b carries both the spread of the data over
blocks and its own Monte-Carlo noise, so one number accounts for both; the Monte-Carlo share alone
is reported too. With a single block only the Monte-Carlo error exists. The 95% interval uses
Student's t with B − 1 degrees of freedom (or draws − 1 for a single block).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from radd_cli.core.losses import DETERMINISTIC_LOSSES, LOSSES
from radd_cli.core.masking import seed_for
from radd_cli.core.schedule import Schedule
from radd_cli.device import Work, autocast, resolve_precision
from radd_cli.errors import ConfigError, DataError, NonFiniteError, Problem

DEFAULT_MC_SAMPLES = 1024  # draws per block in the published protocol

# Student's t 0.975-quantiles for 1..30 degrees of freedom; beyond, a Cornish-Fisher expansion.
_T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t_quantile_975(dof: int) -> float:
    if dof < 1:
        return math.inf
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


@dataclass(frozen=True)
class PerplexityReport:
    loss: str
    length: int
    num_blocks: int
    num_tokens: int
    draws_per_block: int  # the fewest draws any block got
    total_draws: int
    nll_per_token: float
    standard_error: float  # of nll_per_token: data spread and Monte-Carlo noise together
    monte_carlo_error: float | None  # the Monte-Carlo part alone (None with one draw per block)
    nll_interval: tuple[float, float]  # 95%
    seconds: float
    tokens_per_second: float

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token)

    @property
    def perplexity_interval(self) -> tuple[float, float]:
        return math.exp(self.nll_interval[0]), math.exp(self.nll_interval[1])

    @property
    def bits_per_token(self) -> float:
        return self.nll_per_token / math.log(2)

    def to_dict(self) -> dict:
        return asdict(self) | {
            "perplexity": self.perplexity,
            "perplexity_interval": self.perplexity_interval,
            "bits_per_token": self.bits_per_token,
        }


class DrawStatistics:
    """Running sums over the Monte-Carlo draws of each block (nats per sequence, float64)."""

    def __init__(self, num_blocks: int):
        self.count = np.zeros(num_blocks)
        self.total = np.zeros(num_blocks)
        self.squares = np.zeros(num_blocks)

    def add(self, blocks: np.ndarray, values: np.ndarray) -> None:
        np.add.at(self.count, blocks, 1)
        np.add.at(self.total, blocks, values)
        np.add.at(self.squares, blocks, values**2)

    def merged(self, all_reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> DrawStatistics:
        if all_reduce is None:
            return self
        stacked = all_reduce(torch.tensor(np.stack([self.count, self.total, self.squares])))
        merged = DrawStatistics(len(self.count))
        merged.count, merged.total, merged.squares = stacked.double().cpu().numpy()
        return merged

    def summary(self, length: int) -> tuple[float, float, float | None, int]:
        """(NLL per token, its standard error, the Monte-Carlo part or None, degrees of freedom).

        The Monte-Carlo part needs two draws of every block; with one block it is the whole error.
        """
        count = np.maximum(self.count, 1)
        means = self.total / count / length  # m_b, nats per token
        blocks = len(means)
        monte_carlo = None
        if self.count.min() >= 2:
            within = ((self.squares - self.count * (self.total / count) ** 2) / (self.count - 1)).clip(min=0)
            monte_carlo = math.sqrt(float((within / count).sum())) / blocks / length
        if blocks >= 2:
            return float(means.mean()), float(means.std(ddof=1) / math.sqrt(blocks)), monte_carlo, blocks - 1
        return float(means[0]), monte_carlo or 0.0, monte_carlo, int(self.count[0]) - 1


def evaluate_perplexity(
    model: nn.Module,
    schedule: Schedule,
    blocks: np.ndarray,
    *,
    loss: str = "lambda_DCE",
    mc_samples: int = DEFAULT_MC_SAMPLES,
    batch_size: int = 16,
    seed: int = 0,
    target_se: float | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    rank: int = 0,
    world_size: int = 1,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: Callable[[int, int], None] | None = None,
    given: np.ndarray | None = None,
) -> PerplexityReport:
    """Monte-Carlo NLL of `blocks` (B, L) under `loss`, with its standard error and 95% interval.

    `given` (B, L) bool marks positions that are conditioned on, never masked or scored (prompts): the NLL is
    then that of the rest given them, still per token of the block.

    Draws are added in rounds, one more per block each round (more when there are few blocks), until
    `mc_samples` draws per block or, with `target_se`, until the standard error is below it. Blocks
    are shared out over processes (block b to process b mod world_size), each counted exactly once. The
    trunk runs in `precision`, whose `auto` is what `radd eval` picks on this device (device.AUTO_PRECISION).
    """
    _check(loss, mc_samples, batch_size, target_se, blocks)
    resolved = resolve_precision(precision, torch.device(device).type, work=Work.eval)
    num_blocks, length = blocks.shape
    draws = 1 if loss in DETERMINISTIC_LOSSES else mc_samples
    if num_blocks == 1 and draws == 1 and loss not in DETERMINISTIC_LOSSES:
        raise ConfigError("a single block needs at least 2 Monte-Carlo draws for an error bar; raise it", field="mc_samples")
    per_round = max(1, min(draws, batch_size // num_blocks))
    if target_se is not None:
        per_round = max(per_round, 2 if num_blocks == 1 else 1)
    mine = np.arange(rank, num_blocks, world_size)
    stats, done, processed, started = DrawStatistics(num_blocks), 0, 0, time.perf_counter()
    while done < draws:
        take = min(per_round, draws - done)
        items = np.tile(mine, take)  # round r: `take` more draws of each of my blocks, interleaved
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            generator = torch.Generator().manual_seed(seed_for(seed, rank, done, start))
            x0 = torch.from_numpy(blocks[batch].astype(np.int64)).to(device)
            condition = {} if given is None else {"given": torch.from_numpy(np.asarray(given[batch])).to(device)}
            with torch.no_grad(), autocast(torch.device(device), resolved):
                values = LOSSES[loss](model, x0, schedule, generator=generator, **condition)
            if not torch.isfinite(values).all():
                raise NonFiniteError(
                    f"the model produced NaN or infinite losses (blocks {sorted(set(batch.tolist()))[:3]}); its weights "
                    "are broken: check the checkpoint, or evaluate an earlier one"
                )
            stats.add(batch, values.double().cpu().numpy())
            processed += len(batch)
            if progress is not None:  # approximate across processes: they advance together
                progress(min(processed * world_size, num_blocks * draws), num_blocks * draws)
        done += take
        merged = stats.merged(all_reduce)
        if target_se is not None and done >= 2 and merged.summary(length)[1] < target_se:
            break
    merged = stats.merged(all_reduce)
    nll, se, monte_carlo, dof = merged.summary(length)
    if loss in DETERMINISTIC_LOSSES:
        monte_carlo = 0.0  # exact: no Monte-Carlo error at all
    half_width = t_quantile_975(dof) * se if se > 0 else 0.0
    seconds = time.perf_counter() - started
    total = int(merged.count.sum())
    return PerplexityReport(
        loss,
        length,
        num_blocks,
        num_blocks * length,
        int(merged.count.min()),
        total,
        nll,
        se,
        monte_carlo,
        (nll - half_width, nll + half_width),
        seconds,
        total * length / max(seconds, 1e-9),
    )


def _check(loss: str, mc_samples: int, batch_size: int, target_se: float | None, blocks: np.ndarray) -> None:
    problems = []
    if loss not in LOSSES:
        problems.append(Problem("loss", f"unknown objective {loss!r}; choose one of {', '.join(LOSSES)}"))
    if mc_samples < 1:
        problems.append(Problem("mc_samples", f"must be at least 1, got {mc_samples}"))
    if batch_size < 1:
        problems.append(Problem("batch_size", f"must be at least 1, got {batch_size}"))
    if target_se is not None and not 0 < target_se < math.inf:
        problems.append(Problem("target_se", f"must be a positive number, got {target_se}"))
    if problems:
        raise ConfigError(problems)
    if blocks.ndim != 2 or len(blocks) == 0:
        raise DataError("there are no blocks to evaluate")
