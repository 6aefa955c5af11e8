import importlib.util
import math

import pytest
import torch

from radd_cli.core.model import RADD, ModelConfig
from radd_cli.errors import ConfigError
from radd_cli.io.pretrained import parameter_order
from tests.conftest import TINY


def spec_keys(n_blocks: int) -> list[str]:
    """The state-dict keys of the published checkpoints (docs/model-files.md), in order."""
    keys = ["vocab_embed.embedding", "rotary_emb.inv_freq"]
    for i in range(n_blocks):
        keys += [
            f"blocks.{i}.{name}"
            for name in (
                "norm1.weight",
                "norm1.bias",
                "attn_qkv.weight",
                "attn_out.weight",
                "norm2.weight",
                "norm2.bias",
                "mlp.0.weight",
                "mlp.0.bias",
                "mlp.2.weight",
                "mlp.2.bias",
            )
        ]
    return keys + [
        "output_layer.norm_final.weight",
        "output_layer.norm_final.bias",
        "output_layer.linear.weight",
        "output_layer.linear.bias",
    ]


def test_state_dict_keys_shapes_and_parameter_order_match_the_published_model():
    model = RADD(TINY)
    state = model.state_dict()
    assert list(state) == spec_keys(TINY.n_blocks)
    V, d = TINY.vocab_size, TINY.hidden_size
    expected_shapes = {
        "vocab_embed.embedding": (V + 1, d),
        "rotary_emb.inv_freq": (d // TINY.n_heads // 2,),
        "blocks.0.attn_qkv.weight": (3 * d, d),
        "blocks.0.attn_out.weight": (d, d),
        "blocks.1.mlp.0.weight": (4 * d, d),
        "blocks.1.mlp.0.bias": (4 * d,),
        "blocks.1.mlp.2.weight": (d, 4 * d),
        "blocks.1.norm2.bias": (d,),
        "output_layer.linear.weight": (V + 1, d),
        "output_layer.linear.bias": (V + 1,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    names = [name for name, _ in model.named_parameters()]
    assert names == [key for key in spec_keys(TINY.n_blocks) if key != "rotary_emb.inv_freq"]
    assert parameter_order(reversed(list(state))) == names


def test_initialisation_quirks():
    torch.manual_seed(0)
    model = RADD(TINY)
    for name, parameter in model.named_parameters():
        if ".norm" in name or name.startswith("blocks.0.norm"):
            assert torch.equal(parameter, torch.ones_like(parameter)), name  # weight AND bias are ones
    assert not model.output_layer.linear.weight.any() and not model.output_layer.linear.bias.any()
    bound = 1 / math.sqrt(TINY.hidden_size)  # kaiming-uniform with a = sqrt(5)
    embedding = model.vocab_embed.embedding.detach()
    assert embedding.abs().max() <= bound and float(embedding.std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
    head_dim = TINY.hidden_size // TINY.n_heads
    expected = 1 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
    assert torch.allclose(model.rotary_emb.inv_freq, expected)
    tokens = torch.randint(0, TINY.vocab_size + 1, (2, TINY.length))
    assert torch.allclose(model(tokens), torch.full((2, TINY.length, TINY.vocab_size), -math.log(TINY.vocab_size)))


def reference_forward(state: dict, tokens: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The published architecture (docs/model-files.md) written out literally and independently of radd_cli.core.model."""

    def norm(x, prefix):
        return (
            torch.nn.functional.layer_norm(x, x.shape[-1:], eps=1e-5) * state[prefix + ".weight"]
            + state[prefix + ".bias"]
        )

    x = state["vocab_embed.embedding"][tokens]
    batch, length, d = x.shape
    hd = d // n_heads
    inv_freq = 1.0 / 10000 ** (torch.arange(0, hd, 2).float() / hd)
    freqs = torch.einsum("i,j->ij", torch.arange(length).float(), inv_freq)
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]

    def rotate(t):
        t1, t2 = t[..., : hd // 2], t[..., hd // 2 :]
        return t * cos + torch.cat((-t2, t1), -1) * sin

    i = 0
    while f"blocks.{i}.norm1.weight" in state:
        p = f"blocks.{i}."
        qkv = (norm(x, p + "norm1") @ state[p + "attn_qkv.weight"].T).reshape(batch, length, 3, n_heads, hd)
        q, k, v = rotate(qkv[:, :, 0]), rotate(qkv[:, :, 1]), qkv[:, :, 2]
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        attended = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(batch, length, d)
        x = x + attended @ state[p + "attn_out.weight"].T
        h = norm(x, p + "norm2") @ state[p + "mlp.0.weight"].T + state[p + "mlp.0.bias"]
        h = torch.nn.functional.gelu(h, approximate="tanh")
        x = x + h @ state[p + "mlp.2.weight"].T + state[p + "mlp.2.bias"]
        i += 1
    logits = (
        norm(x, "output_layer.norm_final") @ state["output_layer.linear.weight"].T + state["output_layer.linear.bias"]
    )
    return logits[..., :-1].log_softmax(-1)


def test_forward_matches_a_literal_reading_of_the_spec(tiny_model):
    tokens = torch.randint(0, TINY.vocab_size + 1, (3, TINY.length), generator=torch.Generator().manual_seed(1))
    expected = reference_forward(tiny_model.state_dict(), tokens, TINY.n_heads)
    assert torch.allclose(tiny_model(tokens), expected, atol=1e-5)


def test_selected_positions_and_chunked_targets_agree_with_the_full_output(tiny_model):
    tokens = torch.randint(0, TINY.vocab_size + 1, (3, TINY.length), generator=torch.Generator().manual_seed(2))
    where = torch.rand(3, TINY.length, generator=torch.Generator().manual_seed(3)) < 0.5
    full = tiny_model(tokens)
    assert torch.allclose(tiny_model(tokens, where=where), full[where], atol=1e-6)
    targets = torch.randint(0, TINY.vocab_size, (int(where.sum()),))
    tiny_model.chunk_size = 3  # several chunks, recomputed in backward
    tiny_model.train()
    chunked = tiny_model(tokens, where=where, targets=targets)
    assert torch.allclose(chunked, full[where].gather(-1, targets[:, None]).squeeze(-1), atol=1e-6)
    chunked.sum().backward()
    chunked_grads = [p.grad.clone() for p in tiny_model.parameters()]
    tiny_model.zero_grad()
    tiny_model(tokens)[where].gather(-1, targets[:, None]).sum().backward()
    for chunked_grad, parameter in zip(chunked_grads, tiny_model.parameters()):
        assert torch.allclose(chunked_grad, parameter.grad, atol=1e-5)


def test_the_embeddings_gradient_is_the_same_bits_every_time():
    """Rows of repeated tokens (the mask above all) are summed in a fixed order, also over several threads:
    indexing's backward added them with atomic adds, so two identical training runs drifted apart."""
    from radd_cli.core.model import Embedding

    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        embedding = Embedding(301, 64)
        tokens = torch.randint(0, 300, (32, 64), generator=torch.Generator().manual_seed(0))
        tokens[torch.rand(32, 64, generator=torch.Generator().manual_seed(1)) < 0.5] = 300  # half of them masks
        upstream = torch.randn(32, 64, 64, generator=torch.Generator().manual_seed(2))
        gradients = []
        for _ in range(10):
            embedding.zero_grad()
            embedding(tokens).backward(upstream)
            gradients.append(embedding.embedding.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(gradient, gradients[0]) for gradient in gradients)
    expected = torch.zeros(301, 64).index_add_(0, tokens.flatten(), upstream.reshape(-1, 64))
    assert torch.allclose(gradients[0], expected, atol=1e-4)


def test_config_validation_reports_every_problem():
    with pytest.raises(ConfigError, match="2 problems.*dropout.*hidden_size"):
        ModelConfig(vocab_size=16, length=8, hidden_size=30, n_heads=4, dropout=1.5)


def test_flash_backend_without_flash_attn_is_a_clear_error():
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ConfigError, match="flash-attn.*sdpa"):
        RADD(ModelConfig(vocab_size=16, length=8, hidden_size=32, n_heads=4, n_blocks=1, attention="flash"))


def test_activation_checkpointing_recomputes_blocks_to_the_same_gradients():
    from dataclasses import replace

    from radd_cli.core.losses import LOSSES
    from radd_cli.core.schedule import get_schedule
    from tests.conftest import randomized

    config = replace(TINY, dropout=0.2)  # dropout masks must be drawn again identically in the recomputation
    x0 = torch.randint(0, config.vocab_size, (4, config.length), generator=torch.Generator().manual_seed(1))
    gradients, saved = [], []
    for recompute in (False, True):
        model = randomized(RADD(config)).train()
        model.activation_checkpointing = recompute
        torch.manual_seed(5)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(recompute) or t, lambda t: t):
            loss = LOSSES["lambda_DCE"](model, x0, get_schedule("loglinear"), generator=torch.Generator().manual_seed(2))
        loss.mean().backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    assert saved.count(True) < saved.count(False) / 2  # far fewer tensors kept for the backward pass
    for plain, recomputed in zip(*gradients):
        torch.testing.assert_close(recomputed, plain, rtol=0, atol=0)
