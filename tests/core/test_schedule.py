import math

import pytest
import torch

from radd_cli.core.schedule import get_schedule, schedule_from_config
from radd_cli.errors import ConfigError

T = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)


def test_loglinear_masks_a_linear_fraction():
    schedule = get_schedule("loglinear", eps=1e-3)
    assert torch.allclose(schedule.mask_probability(T), (1 - 1e-3) * T)
    assert torch.allclose(schedule.rate(T), (1 - 1e-3) / (1 - (1 - 1e-3) * T))


@pytest.mark.parametrize("name", ["loglinear", "geometric"])
def test_rate_is_the_derivative_of_total(name):
    schedule = get_schedule(name)
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    (derivative,) = torch.autograd.grad(schedule.total(t).sum(), t)
    assert torch.allclose(schedule.rate(t.detach()), derivative, rtol=1e-9)


def test_geometric_endpoints_and_small_sigma_precision():
    schedule = get_schedule("geometric", sigma_min=1e-4, sigma_max=20.0)
    assert schedule.total(torch.tensor(0.0, dtype=torch.float64)) == pytest.approx(1e-4)
    assert schedule.total(torch.tensor(1.0, dtype=torch.float64)) == pytest.approx(20.0)
    tiny = get_schedule("loglinear").expm1_total(torch.tensor([1e-12], dtype=torch.float64))
    assert tiny.item() == pytest.approx((1 - 1e-3) * 1e-12, rel=1e-6)  # expm1, not exp(σ) − 1
    assert math.isclose(schedule.to_config()["sigma_max"], 20.0)


def test_bad_schedules_are_config_errors():
    with pytest.raises(ConfigError, match="unknown noise schedule 'cosine'.*loglinear, geometric"):
        get_schedule("cosine")
    with pytest.raises(ConfigError, match="unknown sigma_max"):
        get_schedule("loglinear", sigma_max=3)
    with pytest.raises(ConfigError, match="sigma_min \\(2.0\\) must be below sigma_max"):
        get_schedule("geometric", sigma_min=2.0, sigma_max=1.0)


def test_published_noise_sections_ignore_keys_of_other_schedules():
    schedule = schedule_from_config({"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20})
    assert schedule.name == "loglinear" and schedule.eps == 1e-3
