import importlib.util
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from radd_cli.errors import CheckpointError, ConfigError
from radd_cli.model import RADD, ModelConfig
from radd_cli.pretrained import load, parameter_order
from tests.conftest import TINY


def spec_keys(n_blocks: int) -> list[str]:
    """The state-dict keys of SPEC §3, in order."""
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
    """SPEC §3 written out literally and independently of radd_cli.model."""

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


def test_config_validation_reports_every_problem():
    with pytest.raises(ConfigError, match="2 problems.*dropout.*hidden_size"):
        ModelConfig(vocab_size=16, length=8, hidden_size=30, n_heads=4, dropout=1.5)


def test_flash_backend_without_flash_attn_is_a_clear_error():
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ConfigError, match="flash-attn.*sdpa"):
        RADD(ModelConfig(vocab_size=16, length=8, hidden_size=32, n_heads=4, n_blocks=1, attention="flash"))


def test_the_attention_backend_is_a_load_time_choice_not_part_of_the_files(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "model")
    assert "attention" not in json.loads((tmp_path / "model" / "config.json").read_text())["model"]
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["model"]["attention"] = "flash"  # written by an older version: ignored on load
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    assert RADD.from_pretrained(tmp_path / "model").config.attention == "sdpa"


def test_save_and_load_round_trip_exactly(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "model", noise={"type": "geometric", "sigma_min": 1e-4, "sigma_max": 20.0})
    bundle = load(tmp_path / "model", with_tokenizer=False)
    loaded = bundle.model
    assert loaded.config == tiny_model.config
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert bundle.noise["type"] == "geometric" and bundle.schedule.name == "geometric"


def published_config(config: ModelConfig) -> dict:
    """A config.json in the published layout: the whole training config tree."""
    return {
        "ngpus": 8,
        "tokens": config.vocab_size,
        "training": {"batch_size": 512, "n_iters": 400001, "ema": 0.9999, "loss_type": "t_DCE"},
        "data": {"train": "openwebtext", "valid": "wikitext103", "cache_dir": "data"},
        "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
        "sampling": {"predictor": "analytic", "steps": 128},
        "model": {
            "name": "small",
            "type": "ddit",
            "hidden_size": config.hidden_size,
            "cond_dim": 128,
            "length": config.length,
            "n_blocks": config.n_blocks,
            "n_heads": config.n_heads,
            "scale_by_sigma": False,
            "dropout": 0.1,
            "dtype": "float16",
            "use_checkpoint": False,
        },
        "optim": {"lr": 3e-4, "warmup": 2500, "grad_clip": 1.0},
    }


@pytest.mark.parametrize("weights_file", ["model.safetensors", "pytorch_model.bin"])
def test_published_layout_loads_with_identical_outputs(tmp_path, tiny_model, weights_file):
    (tmp_path / "config.json").write_text(json.dumps(published_config(TINY)))
    state = tiny_model.state_dict()
    if weights_file.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / weights_file)
    else:
        torch.save(state, tmp_path / weights_file)
    bundle = load(tmp_path, with_tokenizer=False)
    loaded = bundle.model.eval()
    tokens = torch.randint(0, TINY.vocab_size + 1, (2, TINY.length))
    assert torch.equal(loaded(tokens), tiny_model(tokens))
    assert bundle.tokenizer_source == "gpt2" and bundle.noise["type"] == "loglinear"


def test_published_weights_with_a_wrong_shape_are_a_one_line_error(tmp_path, tiny_model):
    config = published_config(TINY)
    config["model"]["hidden_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="shape mismatches.*vocab_embed.embedding \\(17, 32\\) vs \\(17, 64\\)"):
        RADD.from_pretrained(tmp_path)


def test_hub_repo_id_is_read_from_the_hub_cache(tmp_path, tiny_model, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--radd-tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text(json.dumps(published_config(TINY)))
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, snapshot / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = RADD.from_pretrained("someone/radd-tiny")
    assert torch.equal(loaded.vocab_embed.embedding, tiny_model.vocab_embed.embedding)
    with pytest.raises(CheckpointError, match="cannot get someone/missing from the Hugging Face Hub.*--local-dir"):
        RADD.from_pretrained("someone/missing")


def test_bad_model_paths_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        RADD.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        RADD.from_pretrained(tmp_path / "file.txt")
    with pytest.raises(CheckpointError, match="not a model folder"):
        RADD.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"hello": 1}')
    with pytest.raises(CheckpointError, match="unknown layout"):
        RADD.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot be read as JSON"):
        RADD.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(published_config(TINY)))
    with pytest.raises(CheckpointError, match="no weights"):
        RADD.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        RADD.from_pretrained(tmp_path)
