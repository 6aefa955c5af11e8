"""Shared fixtures: tiny models (d = 32, 2 blocks, V = 16, L = 8) on the CPU, deterministic."""

from __future__ import annotations

import pytest
import torch

from radd_cli.core.model import RADD, ModelConfig
from radd_cli.io.pretrained import save
from tests.oracle import ExactConditionals

TINY = ModelConfig(vocab_size=16, length=8, hidden_size=32, n_heads=4, n_blocks=2, dropout=0.0)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (the published init makes outputs uniform)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model


@pytest.fixture
def tiny_model() -> RADD:
    torch.manual_seed(0)
    return randomized(RADD(TINY)).eval()


@pytest.fixture(scope="session")
def oracle() -> ExactConditionals:
    return ExactConditionals(vocab_size=3, length=4, seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved tiny model with its own trained tokenizer (V = 300, L = 16), as `radd train` exports."""
    from radd_cli.io.tokenizer import train_tokenizer

    texts = [
        f"The {animal} sat on the {thing}. It was {mood}."
        for animal in ("cat", "dog", "fox", "owl")
        for thing in ("mat", "rug", "log", "box")
        for mood in ("happy", "tired", "curious")
    ]
    tokenizer = train_tokenizer(texts * 3, 300)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, length=16, hidden_size=32, n_heads=4, n_blocks=2, dropout=0.0)
    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    save(
        randomized(RADD(config), seed=1),
        folder, noise={"type": "loglinear", "eps": 1e-3}, tokenizer=tokenizer.hf
    )
    return folder
