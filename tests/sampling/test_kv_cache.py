"""Block decoding with the key/value cache (sampling/kv_cache.py): exact where it must be, counted honestly,
and working with templates, windows, per-row seeds and rows that join and leave the batch."""

import pytest
import torch

from radd_cli.core.model import RADD, ModelConfig
from radd_cli.core.schedule import get_schedule
from radd_cli.errors import ConfigError
from radd_cli.sampling import sample
from tests.conftest import randomized

LOGLINEAR = get_schedule("loglinear")
BLOCK_SAMPLERS = [
    dict(method="tweedie", steps=8),
    dict(method="euler", steps=8, cache=False),
    dict(method="confidence", steps=8, confidence="margin"),
    dict(method="threshold", threshold=0.3),
]


def network(n_blocks: int) -> RADD:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=16, length=16, hidden_size=32, n_heads=4, n_blocks=n_blocks, dropout=0.0)
    return randomized(RADD(config), seed=4).eval()


def draw(model, **settings):
    common = dict(num_samples=6, length=16, seeds=range(6), batch_size=4, block_length=4)
    return sample(model, LOGLINEAR, **(common | settings))


@pytest.mark.parametrize("settings", BLOCK_SAMPLERS, ids=lambda s: s["method"])
def test_with_one_layer_the_dual_cache_changes_nothing(settings):
    """The first layer's kept keys and values depend only on their own tokens, so they are never stale: with
    one layer the dual cache is exact (from the second layer on it approximates, tests/core/test_kv_cache.py)."""
    one_layer = network(1)
    plain, cached = draw(one_layer, **settings), draw(one_layer, kv_cache="dual", **settings)
    assert torch.equal(plain.tokens, cached.tokens) and torch.equal(plain.nfe_per_sample, cached.nfe_per_sample)
    assert plain.refreshes is None and 0 < cached.refreshes < cached.nfe_per_sample.sum()


def test_a_refresh_starts_every_block_and_kv_refresh_adds_more():
    model = network(2)
    settings = dict(method="confidence", steps=16, kv_cache="prefix")  # 4 blocks of 4 steps: one position a call
    cached = draw(model, **settings)
    assert (cached.nfe_per_sample == 16).all() and cached.refreshes == 6 * 4  # one full call per block per sample
    every_other = draw(model, kv_refresh=1, **settings)
    assert (every_other.nfe_per_sample == 16).all() and every_other.refreshes == 6 * 8  # full, block, full, block …
    always = draw(model, kv_refresh=1, **(settings | {"kv_cache": "dual", "steps": 8}))  # 2 calls a block
    assert always.refreshes == 6 * 4


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_a_sample_is_the_same_whatever_runs_beside_it(mode):
    """Rows join and leave the running batch at different calls and keep their own kept keys and values."""
    model = network(2)
    template = torch.full((16,), model.mask_id)
    template[[0, 5, 15]] = torch.tensor([3, 7, 2])  # fixed tokens in three of the four blocks
    common = dict(num_samples=7, template=template, seeds=[3, 1, 4, 1, 5, 9, 2], method="threshold", threshold=0.3)
    together = draw(model, batch_size=7, kv_cache=mode, **common)
    in_pairs = draw(model, batch_size=2, kv_cache=mode, **common)
    assert torch.equal(together.tokens, in_pairs.tokens) and torch.equal(together.nfe_per_sample, in_pairs.nfe_per_sample)
    assert (together.tokens != model.mask_id).all() and (together.tokens[:, [0, 5, 15]] == template[[0, 5, 15]]).all()


def test_windows_beyond_the_models_length_use_the_cache_in_every_window():
    model = network(2)
    template = torch.full((40,), model.mask_id)
    template[:3] = torch.tensor([1, 2, 3])
    result = draw(model, length=40, template=template, method="tweedie", steps=8, kv_cache="dual")
    assert (result.tokens != model.mask_id).all() and (result.tokens[:, :3] == template[:3]).all()
    # windows start at 0, 8, 16 and 24: four blocks to fill in the first, two in each later one (its first
    # half is the text so far), one refresh each
    assert result.refreshes == 6 * (4 + 2 + 2 + 2)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(kv_cache="dual", block_length=None), "kv_cache: dual needs block_length"),
        (dict(kv_cache="prefix", method="first_hitting", steps=None, block_length=None), "kv_cache: applies to tweedie"),
        (dict(kv_refresh=2), "kv_refresh: applies with kv_cache prefix or dual"),
        (dict(kv_cache="dual", guidance=1.0, template=torch.tensor([1] + [16] * 15)), "does not combine with guidance"),
        (dict(kv_cache="both"), "kv_cache"),
    ],
)
def test_bad_cache_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        draw(network(1), **({"method": "tweedie", "steps": 8} | settings))
