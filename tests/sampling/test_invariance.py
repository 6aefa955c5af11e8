"""Batch invariance (sampling/invariance.py): fixed shapes for every kernel, so a row's log-probabilities, and
with them its tokens, do not depend on the batch size, the other rows, their prompts or the row's place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from radd_cli.core.model import RADD, ModelConfig
from radd_cli.core.schedule import get_schedule
from radd_cli.device import Precision, autocast
from radd_cli.sampling import SamplingConfig, generate, invariance
from tests.conftest import randomized

SCHEDULE = get_schedule("loglinear")
CPU = torch.device("cpu")
# wide enough that the CPU's matrix kernels block differently by shape (d 64, V 300, L 16)
CONFIG = ModelConfig(vocab_size=300, length=16, hidden_size=64, n_heads=4, n_blocks=2, dropout=0.0)


@pytest.fixture(scope="module")
def model() -> RADD:
    torch.manual_seed(0)
    return randomized(RADD(CONFIG), seed=3).eval()


def templates(mask_id: int, count: int) -> torch.Tensor:
    """(count, L) rows with prompts of 0 to 6 fixed tokens: every row asks for a different number of positions."""
    rows = torch.full((count, CONFIG.length), mask_id)
    for i in range(count):
        rows[i, : i % 7] = torch.arange(i % 7) + 11 * i % 250
    return rows


class ShapeSpy(nn.Module):
    """A model that is not RADD: records the shape of every call; log-probs depend on each row's own tokens."""

    def __init__(self, vocab_size: int = 12, length: int = 10):
        super().__init__()
        self.vocab_size, self.mask_id, self.length = vocab_size, vocab_size, length
        self.table = nn.Parameter(torch.randn(vocab_size + 1, vocab_size, generator=torch.Generator().manual_seed(0)))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(tokens.shape))
        context = self.table[tokens].cumsum(dim=1)  # (B, L, V): each position sees its row's tokens so far
        return context.log_softmax(dim=-1)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_every_call_of_any_model_has_the_fixed_row_count(batch):
    spy = ShapeSpy()
    fixed = generate(spy, SCHEDULE, SamplingConfig(steps=6), num_samples=batch, length=spy.length,
                     seeds=range(batch), precision="fp32")  # batch-invariant by default
    assert spy.shapes and set(spy.shapes) == {(invariance.ROWS, spy.length)}
    spy.shapes.clear()
    plain = SamplingConfig(steps=6, batch_invariant=False)
    free = generate(spy, SCHEDULE, plain, num_samples=batch, length=spy.length, seeds=range(batch), precision="fp32")
    assert {rows for rows, _ in spy.shapes} != {invariance.ROWS} or batch == invariance.ROWS  # plain calls vary
    assert torch.equal(fixed.nfe_per_sample, free.nfe_per_sample)  # padding rows are nobody's evaluations


def test_every_trunk_call_has_the_fixed_row_count_and_every_head_call_the_fixed_tile(model, monkeypatch):
    trunks, heads = [], []
    trunk, head = model.trunk, model.head
    monkeypatch.setattr(model, "trunk", lambda tokens: trunks.append(tuple(tokens.shape)) or trunk(tokens))
    monkeypatch.setattr(model, "head", lambda hidden: heads.append(tuple(hidden.shape)) or head(hidden))
    start = templates(model.mask_id, 7)
    for config in (SamplingConfig(steps=8), SamplingConfig(method="ordered")):  # batch-invariant by default
        generate(model, SCHEDULE, config, num_samples=7, length=CONFIG.length, template=start, seeds=range(7),
                 batch_size=5, precision="fp32")
    assert set(trunks) == {(invariance.ROWS, CONFIG.length)}
    assert set(heads) == {(invariance.TILE, CONFIG.hidden_size)}
    assert model.head_tile is None  # the tile is set for invariant calls only


def test_the_rows_scored_alone_or_in_any_batch_at_any_place_get_the_same_bits(model, inference_precision):
    start = templates(model.mask_id, 8)
    where = start == model.mask_id  # (8, L): each row asks for its free positions
    with torch.inference_mode(), autocast(CPU, Precision(inference_precision)):
        alone = [invariance.fixed_shape_log_probs(model, start[i : i + 1], where[i : i + 1]) for i in range(8)]
        for order in ([0, 1, 2], [5, 3, 0, 7, 1, 2, 6, 4], [7, 6, 5, 4, 3, 2, 1, 0], [2, 2, 2, 2, 2]):
            together = invariance.fixed_shape_log_probs(model, start[order], where[order])
            assert torch.equal(together, torch.cat([alone[i] for i in order]))


SETTINGS = {
    "tweedie": dict(method="tweedie", steps=12),
    "ordered": dict(method="ordered"),
    "confidence": dict(method="confidence", steps=12),
    "threshold, dual key/value cache": dict(method="threshold", threshold=0.3, block_length=4, kv_cache="dual"),
    "tweedie, prefix key/value cache": dict(method="tweedie", steps=12, block_length=8, kv_cache="prefix"),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_a_samples_tokens_do_not_depend_on_the_batch_it_ran_in(model, inference_precision, name):
    """Batches of 1, 3 and 8 rows, with prompts of different lengths, in two orders: the same tokens per seed;
    with the key/value cache too (its full and its block calls run at fixed shapes as well)."""
    config = SamplingConfig(**SETTINGS[name])  # batch-invariant by default
    start, seeds = templates(model.mask_id, 8), list(range(100, 108))

    def draw(order: list[int], batch: int) -> dict[int, list[int]]:
        result = generate(model, SCHEDULE, config, num_samples=len(order), length=CONFIG.length,
                          template=start[order], seeds=[seeds[i] for i in order], batch_size=batch,
                          precision=inference_precision)
        return dict(zip(order, result.tokens.tolist()))

    alone = {i: draw([i], 1)[i] for i in range(8)}
    assert draw(list(range(8)), 8) == alone
    assert draw([6, 2, 7, 0, 4, 1, 5, 3], 3) == alone
    assert draw([3, 5], 8) == {3: alone[3], 5: alone[5]}
