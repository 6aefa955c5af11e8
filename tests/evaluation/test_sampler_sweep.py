"""The sampler sweep's parts (radd bench quality): which rows run, exact scores on the Markov language, the
Pareto frontier and what counts as matching the exact sampler."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from radd_cli.data import markov
from radd_cli.evaluation import sampler_sweep
from radd_cli.evaluation.sampler_sweep import QualityRow, mark_pareto, matches, measure, reference_row, sweep_rows


def test_rows_keep_block_lengths_that_divide_the_length_and_run_block_decoding_once_per_cache_mode():
    rows = [("tweedie", {"steps": 8}), ("tweedie", {"steps": 8, "block_length": 4}), ("threshold", {"block_length": 3})]
    assert sweep_rows(rows, 16, ["none", "dual"]) == [
        ("tweedie", {"steps": 8}),
        ("tweedie", {"steps": 8, "block_length": 4}),
        ("tweedie", {"steps": 8, "block_length": 4, "kv_cache": "dual"}),
    ]
    assert sweep_rows(sampler_sweep.SWEEP, 256, ["none"]) == sampler_sweep.SWEEP  # every default block fits 256


def test_the_language_itself_scores_no_forbidden_transitions_and_its_entropy_rate():
    reference = reference_row(num_samples=200, length=128, seed=3)
    assert reference.forbidden_rate == 0.0 and reference.forbidden_se == 0.0
    rate, margin = markov.chain().entropy_rate(), 4 * reference.nll_se
    start = math.log(64) + math.log(5)  # a stretch starts mid-document: its first word and place in it are unknown
    assert rate - margin < reference.nll_per_token < rate + start / 128 + margin
    assert matches(reference, reference)


def test_misspelt_samples_are_caught_and_do_not_match_the_language():
    reference = reference_row(num_samples=100, length=64, seed=1)
    clean = [[int(s) + 1 for s in row] for row in markov.chain().sample(100, 64 + 256, 9)[:, 256:]]
    shuffled = [random.Random(i).sample(sample, len(sample)) for i, sample in enumerate(clean)]  # symbols out of order
    broken = measure("shuffled", {}, shuffled, calls=1.0, seconds=0.0, exact=True)
    assert broken.forbidden_rate > 0.2 and not matches(broken, reference)
    good = measure("clean", {}, clean, calls=1.0, seconds=0.0, exact=True)
    assert good.forbidden_rate == 0.0 and matches(good, reference)


def test_only_rows_no_other_row_beats_on_calls_and_quality_are_on_the_frontier():
    def row(calls: float, forbidden: float, nll: float) -> QualityRow:
        return QualityRow("tweedie", {}, calls, 1.0, 2.0, nll_per_token=nll, nll_se=0.01, forbidden_rate=forbidden,
                          forbidden_se=0.01)

    cheap_bad, dear_good, dominated = row(4, 0.3, 1.0), row(64, 0.01, 0.5), row(64, 0.2, 0.9)
    mark_pareto([cheap_bad, dear_good, dominated])
    assert [r.pareto for r in (cheap_bad, dear_good, dominated)] == [True, True, False]
    twin = dataclasses.replace(dear_good, pareto=False)
    mark_pareto([dear_good, twin])
    assert dear_good.pareto and twin.pareto  # equal rows do not beat each other


@pytest.mark.parametrize("exact", [False, True])
def test_every_row_has_entropy_and_distinct_n_and_only_markov_rows_have_exact_scores(exact):
    samples = [[int(s) + 1 for s in row] for row in markov.chain().sample(4, 32, 0)]
    found = measure("tweedie", {"steps": 8}, samples, calls=8.0, seconds=0.5, exact=exact)
    assert found.label == "tweedie (steps 8)" and found.entropy > 0 and set(found.distinct) == {1, 2, 3, 4}
    assert (found.nll_per_token is not None) is exact and (found.forbidden_rate is not None) is exact
