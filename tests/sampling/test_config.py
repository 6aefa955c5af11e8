"""SamplingConfig refuses what a sampler cannot do, naming the setting."""

import pytest
import torch

from radd_cli.errors import ConfigError
from radd_cli.sampling import (
    sample,
)
from tests.sampling.oracle_draws import LOGLINEAR


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(strategy="top_p", top_p=0.0), "top_p: must be greater than 0"),
        (dict(strategy="top_p", top_p=1.5), "top_p: must be at most 1"),
        (dict(strategy="top_p"), "top_p: strategy top_p needs a value"),
        (dict(strategy="top_k", top_k=0), "top_k: must be at least 1"),
        (dict(top_k=3), "use strategy top_k"),
        (dict(temperature=0.0), "temperature: must be greater than 0"),
        (dict(temperature=float("nan")), "temperature: must be a finite number"),
        (dict(strategy="nucleus"), "strategy: 'nucleus' is not one of 'direct', 'top_p', 'top_k'"),
        (dict(steps=0), "steps: must be at least 1"),
        (dict(steps=10**9), "steps: must be at most 1000000"),
        (dict(method="ancestral"), "method: 'ancestral' is not one of 'tweedie'"),
        (dict(order="backward"), "order: applies to ordered, not to tweedie"),
        (dict(num_samples=0), "num_samples must be at least 1"),
        (dict(seeds=[1, 2, -1]), "seeds: must be whole numbers in 0..2\\^64-1, got -1"),
        (dict(seeds=[1, 2, 2**64]), "seeds: must be whole numbers"),
        (dict(template=torch.tensor([1, 2, 0, 1])), "no free position"),
        (dict(template=torch.tensor([3, 3])), "must be \\(4,\\)"),
        (dict(template=torch.full((2, 4), 3)), "must be \\(4,\\), one id per position, or \\(3, 4\\)"),
        (dict(template=torch.tensor([[3, 3, 3, 3], [3, 3, 3, 3], [1, 2, 0, 1]])), "no free position"),
        (dict(method="ordered", steps=None, order=torch.tensor([0, 0, 1, 2])), "permutation"),
        (dict(seeds=[1, 2]), "seeds: 2 for 3 samples"),
    ],
)
def test_bad_sampler_arguments_are_config_errors(oracle, kwargs, message):
    arguments = dict(num_samples=3, length=4, steps=4) | kwargs
    with pytest.raises(ConfigError, match=message):
        sample(oracle, LOGLINEAR, **arguments)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(method="threshold", threshold=0.0), "threshold: must be greater than 0"),
        (dict(method="threshold", threshold=1.5), "threshold: must be at most 1"),
        (dict(method="threshold"), "threshold: the threshold sampler needs it"),
        (dict(method="confidence", steps=0), "steps: must be at least 1"),
        (dict(method="confidence", steps=1, block_length=2), "steps: 1 is fewer than the 4 blocks of block_length 2"),
        (dict(method="remdm", eta=-0.1), "eta: must be at least 0"),
        (dict(block_length=3), "block_length: 3 must divide the sequence length 8"),
        (dict(threshold=0.5), "threshold: applies to threshold, not to tweedie"),
        (dict(method="ordered", block_length=2), "block_length: applies to tweedie, euler, confidence"),
        (dict(method="confidence", remasking="conf"), "remasking: applies to remdm, not to confidence"),
        (dict(guidance=-1.0), "guidance: must be at least 0"),
        (dict(guidance=1e30), "guidance: must be at most 1000"),  # near 1e308 the guided log-probs were NaN
        (dict(method="remdm", eta=1.5), "eta: must be at most 1"),  # σ = η·σ_max is a probability
        (dict(method="ordered", order=[2**63] * 8), "order: give the positions as whole numbers from 0"),
        (dict(method="ordered", order=[[0, 1], [0]]), "order: give the positions as whole numbers from 0"),
        (dict(length=8 * 64 + 1), "length: 513 tokens is 64 times the model's length \\(8\\); radd writes at most 64"),
    ],
)
def test_bad_settings_are_config_errors(tiny_model, settings, message):
    settings = {"length": 8, **settings}
    with pytest.raises(ConfigError, match=message):
        sample(tiny_model, LOGLINEAR, num_samples=2, **settings)
