"""Quality against cost: every sampler over a sweep of its settings, measured honestly.

On the built-in Markov language (radd_cli/data/markov.py) the samples are scored exactly: their negative
log-likelihood per token under the true language (with its standard error), the rate of forbidden
transitions, and their unigram entropy (so a sampler that collapses cannot look good). On any other
model the measures are judge-free: unigram entropy and distinct-n. Every row also has its network calls
per sequence and its wall time. `radd bench quality` prints, writes and plots what this returns.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch

from radd_cli.data import markov
from radd_cli.evaluation.sample_quality import DISTINCT_ORDERS, distinct_n, unigram_entropy
from radd_cli.io.inference import LoadedModel
from radd_cli.sampling import SamplingConfig, generate

# Steps of the exact reference: far past where tweedie's samples change (E-NFE levels off near the length).
EXACT_STEPS = 1024
# (method, settings) rows of the default sweep; tweedie at EXACT_STEPS is the exact reference.
SWEEP = [
    *[("tweedie", {"steps": steps}) for steps in (16, 64, 256, EXACT_STEPS)],
    ("first_hitting", {}),
    *[("confidence", {"steps": steps, "confidence": kind}) for kind in ("probability", "margin") for steps in (16, 32, 64)],
    *[("threshold", {"threshold": tau, "confidence": "margin"}) for tau in (0.5, 0.7, 0.9, 0.99)],
    *[("threshold", {"threshold": tau}) for tau in (0.7, 0.9)],
    ("tweedie", {"steps": 64, "block_length": 16}),
    # block decoding (semi-autoregressive), where the key/value cache applies (`kv_modes`)
    ("tweedie", {"steps": 256, "block_length": 32}),
    *[("confidence", {"steps": steps, "block_length": 32, "confidence": "margin"}) for steps in (64, 128)],
    *[("threshold", {"threshold": tau, "block_length": 32, "confidence": "margin"}) for tau in (0.7, 0.9, 0.99)],
    *[("remdm", {"steps": steps, "remasking": "cap", "eta": 0.02}) for steps in (64, 256)],
    ("remdm", {"steps": 256, "remasking": "loop", "eta": 0.02}),
]
REFERENCE = ("tweedie", {"steps": EXACT_STEPS})


def sweep_rows(rows: list[tuple[str, dict]], length: int, kv_modes: list[str]) -> list[tuple[str, dict]]:
    """The rows that fit sequences of `length` (a block length must divide it), each block-decoding one once per
    key/value cache mode."""
    fitting = [(m, s) for m, s in rows if "block_length" not in s or length % s["block_length"] == 0]
    return [
        (method, settings | ({"kv_cache": mode} if mode != "none" else {}))
        for method, settings in fitting
        for mode in (kv_modes if "block_length" in settings else ["none"])
    ]


@dataclass
class QualityRow:
    method: str
    settings: dict
    calls_per_sequence: float
    seconds: float
    entropy: float  # mean unigram entropy of a sample, nats
    nll_per_token: float | None = None  # Markov only: exact, over the symbols whose transition is allowed
    nll_se: float | None = None
    forbidden_rate: float | None = None  # Markov only: forbidden transitions / transitions
    forbidden_se: float | None = None
    distinct: dict = field(default_factory=dict)  # distinct-n, n = 1..4
    pareto: bool = False
    full_calls_per_sequence: float | None = None  # with a key/value cache: the calls that were full ones

    @property
    def label(self) -> str:
        shown = ", ".join(f"{key} {value}" for key, value in self.settings.items())
        return f"{self.method} ({shown})" if shown else self.method


def is_markov(loaded: LoadedModel) -> bool:
    """Whether the model speaks the built-in Markov language (same tokenizer), so samples can be scored exactly."""
    return loaded.tokenizer.fingerprint() == markov.tokenizer().fingerprint()


def run_sweep(
    loaded: LoadedModel,
    rows: list[tuple[str, dict]],
    *,
    num_samples: int,
    batch_size: int,
    length: int,
    seed: int = 0,
    progress=None,
) -> list[QualityRow]:
    """Sample `num_samples` sequences with every (method, settings) row and measure them."""
    scored_exactly = is_markov(loaded)
    found = []
    for number, (method, settings) in enumerate(rows):
        config = SamplingConfig(method=method, **settings)
        started = time.perf_counter()
        result = generate(
            loaded.model,
            loaded.schedule,
            config,
            num_samples=num_samples,
            length=length,
            seeds=range(seed, seed + num_samples),
            batch_size=batch_size,
            device=loaded.device,
            precision=loaded.precision,
        )
        seconds = time.perf_counter() - started
        row = measure(method, settings, result.sequences(), result.nfe, seconds, scored_exactly)
        row.full_calls_per_sequence = result.refreshes / num_samples if result.refreshes is not None else None
        found.append(row)
        if progress is not None:
            progress(number + 1, len(rows))
    mark_pareto(found)
    return found


def measure(method: str, settings: dict, samples: list[list[int]], calls: float, seconds: float, exact: bool) -> QualityRow:
    """The row for one setting: entropy and distinct-n always; the chain's scores when `exact`."""
    row = QualityRow(
        method,
        settings,
        calls,
        seconds,
        statistics.fmean(unigram_entropy(sample) for sample in samples),
        distinct={n: distinct_n(samples, n) for n in DISTINCT_ORDERS},
    )
    if exact:
        chain = markov.chain()
        scores = [chain.score(markov.symbols_of(sample)) for sample in samples]
        per_sample = [s.nll / s.scored for s in scores if s.scored]
        row.nll_per_token = statistics.fmean(per_sample)
        row.nll_se = statistics.stdev(per_sample) / math.sqrt(len(per_sample)) if len(per_sample) > 1 else 0.0
        transitions = sum(s.transitions for s in scores)
        rate = sum(s.forbidden for s in scores) / max(1, transitions)
        row.forbidden_rate = rate
        row.forbidden_se = math.sqrt(rate * (1 - rate) / max(1, transitions))
    return row


def reference_row(num_samples: int, length: int, seed: int = 0) -> QualityRow:
    """The language itself: exact stretches of it, measured like samples (what a perfect sampler would get)."""
    chain = markov.chain()
    symbols = chain.sample(num_samples, length + 256, seed)[:, 256:]  # from the middle of documents
    samples = [[int(s) + 1 for s in row] for row in symbols]
    return measure("the language itself", {}, samples, 0.0, 0.0, exact=True)


def mark_pareto(rows: list[QualityRow]) -> None:
    """Flag the rows no other row beats on calls and quality together (quality: forbidden rate and NLL on
    the Markov language, entropy and distinct-4 otherwise)."""

    def costs(row: QualityRow) -> tuple:
        if row.forbidden_rate is not None:
            return (row.calls_per_sequence, row.forbidden_rate, row.nll_per_token)
        return (row.calls_per_sequence, -row.entropy, -row.distinct.get(4, 0.0))

    for row in rows:
        mine = costs(row)
        row.pareto = not any(
            all(a <= b for a, b in zip(costs(other), mine)) and costs(other) != mine for other in rows if other is not row
        )


def matches(row: QualityRow, reference: QualityRow) -> bool:
    """Within two standard errors of the reference on both NLL and forbidden rate (whatever the cost)."""
    if row.nll_per_token is None or reference.nll_per_token is None:
        return False
    close_nll = abs(row.nll_per_token - reference.nll_per_token) <= 2 * math.hypot(row.nll_se, reference.nll_se)
    close_rate = abs(row.forbidden_rate - reference.forbidden_rate) <= 2 * math.hypot(row.forbidden_se, reference.forbidden_se)
    return close_nll and close_rate


def seam_rates(samples: torch.Tensor, window: int) -> tuple[float, float]:
    """Forbidden-transition rates (at window seams, inside windows) of Markov samples longer than `window`.

    A seam is where a window's new text begins, right after the previous window's end (windows overlap by
    half, radd_cli/sampling/pool.py): its first two symbols, whose context straddles the seam, are the seam's.
    """
    from radd_cli.sampling.pool import window_starts

    chain = markov.chain()
    length = samples.shape[1]
    seams = set()
    for previous in window_starts(length, window)[:-1]:
        seams.update(range(previous + window, min(length, previous + window + 2)))
    at, inside = [0, 0], [0, 0]  # forbidden, symbols
    for row in samples.tolist():
        for t, p in enumerate(chain.probabilities(markov.symbols_of(row))):
            if p is not None:
                bucket = at if t in seams else inside
                bucket[0] += p == 0
                bucket[1] += 1
    return at[0] / max(1, at[1]), inside[0] / max(1, inside[1])
