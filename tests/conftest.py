"""Shared fixtures: tiny models (d = 32, 2 blocks, V = 16, L = 8) on the CPU, deterministic."""

from __future__ import annotations

import pytest
import torch

from radd_cli.model import RADD, ModelConfig
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
