"""The learning-rate schedule and the optimizer built from a recipe."""

import pytest
import torch

from radd_cli.training.optim import build_optimizer, build_scheduler, learning_rate_factor
from radd_cli.training.recipe import load_recipe


def test_learning_rate_schedules():
    recipe = load_recipe(
        "tiny",
        ["training.steps=110", "training.warmup_steps=10", "training.lr_schedule=cosine", "training.min_lr_ratio=0.1"],
    )
    factors = [learning_rate_factor(recipe.training, step) for step in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.1 + 0.9 * 0.5, abs=0.01) and factors[-1] == pytest.approx(0.1, abs=0.01)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_the_scheduler_follows_the_factor_and_adamw_takes_the_recipe():
    recipe = load_recipe("tiny", ["training.steps=20", "training.warmup_steps=4", "training.lr=0.5", "training.beta1=0.8"])
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, recipe.training, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, recipe.training)
    assert optimizer.defaults["betas"] == (0.8, recipe.training.beta2)
    for step in range(10):
        assert scheduler.get_last_lr()[0] == pytest.approx(0.5 * learning_rate_factor(recipe.training, step))
        optimizer.step()
        scheduler.step()
