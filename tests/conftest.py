"""Shared fixtures: tiny models (d = 32, 2 blocks, V = 16, L = 8) on the CPU, deterministic."""

from __future__ import annotations

import pytest
import torch

from radd_cli.core.model import RADD, ModelConfig
from radd_cli.device import NATIVE_BF16_VARIABLE, cpu_has_native_bf16
from radd_cli.io.pretrained import save
from tests.oracle import ExactConditionals

TINY = ModelConfig(vocab_size=16, length=8, hidden_size=32, n_heads=4, n_blocks=2, dropout=0.0)
INFERENCE_PRECISIONS = ("fp32", "bf16")  # what radd offers for sampling, evaluation and serving on a CPU


def require(precision: str) -> str:
    """`precision`, or skip where this CPU does not run it (bf16 without native bf16: .ci/run runs these
    tests again with RADD_NATIVE_BF16=1, so every machine takes the bf16 path, emulated where it must)."""
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip(f"bf16 on a CPU without native bf16: run with {NATIVE_BF16_VARIABLE}=1")
    return precision


@pytest.fixture(params=INFERENCE_PRECISIONS)
def inference_precision(request) -> str:
    """Each precision radd samples, evaluates and serves in (a test using it is marked `precision`)."""
    return require(request.param)


def pytest_collection_modifyitems(items):
    for item in items:
        if "inference_precision" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.precision)


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
