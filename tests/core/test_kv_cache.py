"""Keys and values kept from a full call, and block calls against them (core/kv_cache.py)."""

import pytest
import torch

from radd_cli.core.kv_cache import KVMode
from radd_cli.core.model import RADD, ModelConfig
from tests.conftest import randomized

CONFIG = ModelConfig(vocab_size=16, length=16, hidden_size=32, n_heads=4, n_blocks=2, dropout=0.0)


def network(n_blocks: int = 2) -> RADD:
    torch.manual_seed(0)
    return randomized(RADD(ModelConfig(**{**vars(CONFIG), "n_blocks": n_blocks})), seed=3).eval()


def tokens(rows: int = 3, seed: int = 0) -> torch.Tensor:
    drawn = torch.randint(0, 17, (rows, CONFIG.length), generator=torch.Generator().manual_seed(seed))  # 16 = mask
    return drawn


def blocks(starts: list[int], width: int) -> torch.Tensor:
    """(B, width) positions: row b's block starts at starts[b]."""
    return torch.tensor(starts)[:, None] + torch.arange(width)


def test_a_full_call_keeping_keys_and_values_is_the_ordinary_call():
    model, x = network(), tokens()
    where = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    with torch.inference_mode():
        log_probs, store = model.log_probs_keeping_kv(x, where)
        assert torch.equal(log_probs, model.log_probs_at(x, where))
    assert store.keys.shape == store.values.shape == (2, 3, 16, 4, 8)  # (layers, B, L, H, hd)


def test_a_dual_block_call_against_a_fresh_store_equals_the_full_call_at_the_block():
    model, x = network(), tokens()
    positions = blocks([0, 4, 12], 4)  # each row its own block
    where = torch.ones_like(positions, dtype=torch.bool)
    with torch.inference_mode():
        _, store = model.log_probs_keeping_kv(x, torch.zeros_like(x, dtype=torch.bool))
        block = model.block_log_probs_at(x.gather(1, positions), positions, store, KVMode.dual, where)
        full = model.log_probs(x).gather(1, positions[..., None].expand(-1, -1, 16)).reshape(-1, 16)
    assert torch.allclose(block, full, atol=1e-5)


def test_with_one_layer_a_prefix_block_call_equals_a_full_call_on_the_sequence_cut_after_the_block():
    """Rows whose blocks end at different places each see their own prefix. The first layer's stored keys
    and values depend only on their own tokens, so the only difference
    from a full call is that the suffix is not attended."""
    model, x = network(n_blocks=1), tokens()
    positions = blocks([4, 4, 0], 4)
    where = torch.tensor([[True, False, True, True]] * 3)
    with torch.inference_mode():
        _, store = model.log_probs_keeping_kv(x, torch.zeros_like(x, dtype=torch.bool))
        block = model.block_log_probs_at(x.gather(1, positions), positions, store, KVMode.prefix, where)
        cut = torch.cat([model.log_probs(x[:2, :8])[:, 4:8][where[:2]], model.log_probs(x[2:, :4])[0][where[2]]])
        full = model.log_probs(x).gather(1, positions[..., None].expand(-1, -1, 16))[where]
    assert torch.allclose(block, cut, atol=1e-5)
    assert not torch.allclose(block, full, atol=1e-3)  # so the prefix cache differs from the full call


def test_a_prefix_block_call_attends_to_the_stored_prefix_and_the_fresh_block_only():
    model, x = network(), tokens()
    start, width = 8, 4
    positions = blocks([start] * 3, width)
    with torch.inference_mode():
        _, store = model.log_probs_keeping_kv(x, torch.zeros_like(x, dtype=torch.bool))
        every = torch.ones(3, width, dtype=torch.bool)
        block = model.block_log_probs_at(x[:, start : start + width], positions, store, KVMode.prefix, every)
        # by hand: at every layer, keys and values are the stored prefix's followed by the block's own
        h = model.vocab_embed(x[:, start : start + width])
        cos, sin = model.rotary_emb(CONFIG.length, x.device)
        for layer, unit in enumerate(model.blocks):
            q, k, v = unit.qkv(h, cos[start : start + width], sin[start : start + width])
            keys = torch.cat([store.keys[layer, :, :start].transpose(1, 2), k], dim=2)  # (B, H, start + width, hd)
            values = torch.cat([store.values[layer, :, :start].transpose(1, 2), v], dim=2)
            h = unit.mix(h, torch.nn.functional.scaled_dot_product_attention(q, keys, values))
        by_hand = model.head(h).reshape(-1, 16)
    assert torch.allclose(block, by_hand, atol=1e-5)


@pytest.mark.parametrize("layers, exact", [(1, True), (2, False)])
def test_a_stale_store_is_exact_with_one_layer_and_approximate_from_the_second(layers, exact):
    """Stored keys and values of the first layer depend only on their own token; deeper ones also on the
    block's tokens at the time of the full call, which is what a stale store approximates."""
    model, x = network(layers), tokens()
    positions = blocks([4, 4, 4], 4)
    changed = x.clone()
    changed[:, 4:8] = torch.randint(0, 16, (3, 4), generator=torch.Generator().manual_seed(5))  # the block decoded
    where = torch.ones(3, 4, dtype=torch.bool)
    with torch.inference_mode():
        _, stale = model.log_probs_keeping_kv(x, torch.zeros_like(x, dtype=torch.bool))
        block = model.block_log_probs_at(changed[:, 4:8], positions, stale, KVMode.dual, where)
        exact_values = model.log_probs(changed)[:, 4:8].reshape(-1, 16)
    assert torch.allclose(block, exact_values, atol=1e-5) == exact


def test_the_rotary_angles_at_given_positions_are_those_of_the_full_length():
    model = network()
    cos, sin = model.rotary_emb(16, torch.device("cpu"))  # (L, hd)
    picked_cos, picked_sin = model.rotary_emb.at(torch.tensor([[3, 7], [0, 15]]))  # (2, 2, hd)
    assert torch.equal(picked_cos[1, 1], cos[15]) and torch.equal(picked_sin[0, 0], sin[3])


def test_a_block_call_writes_the_blocks_fresh_keys_and_values_into_the_store():
    """In place, so that block decoding copies nothing; the next call over the block overwrites them first."""
    model, x = network(), tokens()
    positions = blocks([4, 4, 4], 4)
    changed = x.clone()
    changed[:, 4:8] = (x[:, 4:8] + 1) % 16
    where = torch.ones(3, 4, dtype=torch.bool)
    with torch.inference_mode():
        _, store = model.log_probs_keeping_kv(x, torch.zeros_like(x, dtype=torch.bool))
        before = store.keys.clone()
        first = model.block_log_probs_at(changed[:, 4:8], positions, store, KVMode.dual, where)
        _, exact = model.log_probs_keeping_kv(changed, torch.zeros_like(x, dtype=torch.bool))
        again = model.block_log_probs_at(changed[:, 4:8], positions, store, KVMode.dual, where)
    assert torch.allclose(store.keys[0, :, 4:8], exact.keys[0, :, 4:8], atol=1e-5)  # the first layer's: exact
    assert torch.equal(store.keys[:, :, :4], before[:, :, :4]) and torch.equal(store.keys[:, :, 8:], before[:, :, 8:])
    assert torch.allclose(first, again, atol=1e-6)
