"""Compiled inference (core/compiled.py): the same samples, compiled once per length, and a clean fallback."""

import pytest
import torch

from radd_cli.core import compiled
from radd_cli.core.model import RADD, ModelConfig
from radd_cli.core.schedule import get_schedule
from radd_cli.sampling import sample
from tests.conftest import randomized

CONFIG = ModelConfig(vocab_size=16, length=16, hidden_size=32, n_heads=4, n_blocks=2, dropout=0.0)


def network() -> RADD:
    torch.manual_seed(0)
    return randomized(RADD(CONFIG), seed=5).eval()


def draw(model, **settings):
    common = dict(num_samples=5, length=16, seeds=range(5), batch_size=3, method="threshold", threshold=0.3)
    common["precision"] = "fp32"  # the precision warm_up traced in (autocast is part of what a trace guards on)
    return sample(model, get_schedule("loglinear"), **(common | settings))


@pytest.mark.slow
def test_compiled_calls_give_the_same_samples_and_compile_once_whatever_the_batch():
    """Traced by TorchDynamo (its "eager" backend, so the test needs no C++ compiler): batches of 3, then 2
    rows as samples finish, and block calls, each kind of call traced once."""
    torch._dynamo.reset()
    plain, traced = network(), network()
    assert compiled.compile_for_inference(traced, torch.device("cpu"), backend="eager") is None
    assert compiled.is_compiled(traced) and not compiled.is_compiled(plain)
    compiled.warm_up(traced, 16, block_length=4)
    frames = torch._dynamo.utils.counters["frames"]["ok"]
    for settings in ({}, {"block_length": 4, "kv_cache": "dual"}, {"block_length": 4, "kv_cache": "prefix"}):
        assert torch.equal(draw(plain, **settings).tokens, draw(traced, **settings).tokens)
    assert torch._dynamo.utils.counters["frames"]["ok"] == frames  # nothing traced again after the warm-up


def test_without_a_compiler_the_model_stays_eager_and_the_reason_is_one_line(monkeypatch):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    model = network()
    reason = compiled.compile_for_inference(model, torch.device("cpu"))
    assert reason == "compile is not used: torch.compile on the CPU needs a C++ compiler (g++ or clang++), " \
        "and none is on the PATH"
    assert not compiled.is_compiled(model)
    compiled.warm_up(model, 16, block_length=4)  # does nothing on an eager model
