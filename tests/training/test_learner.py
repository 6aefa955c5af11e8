"""One optimizer step (Learner.step): reproducible from the seed and the step, the EMA follows, a non-finite loss
skips the update, and the global batch is shared out exactly over accumulation and processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radd_cli.errors import ConfigError
from radd_cli.training.learner import EMA, Learner, micro_batch_size
from radd_cli.training.recipe import load_recipe
from radd_cli.training.runtime import build_runtime
from tests.cli_helpers import TINY_RUN

VOCAB = 40


def learner(*extra: str) -> Learner:
    recipe = load_recipe("tiny", [*TINY_RUN, "training.lr=1e-2", "training.warmup_steps=0", *extra])
    return Learner(recipe, build_runtime("fp32", cpu=True), VOCAB)


def blocks(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(8, 16))


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_a_step_is_the_same_from_the_same_seed_and_moves_the_weights_and_the_ema():
    first, second = learner(), learner()
    before = weights(first.model)
    results = [first.step(blocks()), second.step(blocks())]
    assert results[0] == results[1] and results[0].applied and np.isfinite(results[0].loss)
    for a, b, old in zip(weights(first.model), weights(second.model), before):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, old) for a, old in zip(weights(first.model), before))
    assert first.state.step == first.state.optimizer_steps == first.ema.num_updates == 1
    assert first.state.blocks_seen == 8
    ema_head = first.ema_model().output_layer.linear.weight
    assert not torch.equal(ema_head, torch.zeros_like(ema_head))  # the EMA moved off the zero-initialised head


def test_a_non_finite_loss_skips_the_update_and_counts_it(monkeypatch):
    trainee = learner()
    monkeypatch.setattr(trainee, "objective", lambda model, x0, schedule, **_: model(x0).sum(dim=(1, 2)) * torch.nan)
    before = weights(trainee.model)
    result = trainee.step(blocks())
    assert not result.applied and not np.isfinite(result.loss)
    assert all(torch.equal(a, b) for a, b in zip(weights(trainee.model), before))
    state = trainee.state
    assert (state.step, state.optimizer_steps, state.skipped_nonfinite, state.nonfinite_in_a_row) == (1, 0, 1, 1)


def test_the_global_batch_is_shared_out_over_accumulation_and_processes():
    training = load_recipe("tiny", ["training.batch_size=24", "training.accumulation=3"]).training
    assert micro_batch_size(training, processes=1) == 8 and micro_batch_size(training, processes=2) == 4
    with pytest.raises(ConfigError, match=r"must be a multiple of training.accumulation × processes \(3 × 5\)"):
        micro_batch_size(training, processes=5)


def test_the_ema_warms_up_then_follows_its_decay():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model.parameters())  # decay min(0.5, 2/11): the warm-up's
    assert ema.shadow_params[0].item() == pytest.approx(1 - 2 / 11)
    ema.update(model.parameters())  # decay min(0.5, 3/12) = 0.25
    assert ema.shadow_params[0].item() == pytest.approx(1 - 0.25 * (2 / 11))
