"""Perplexity with error bars: the oracle's known value is inside the interval; the estimators agree."""

import math

import numpy as np
import pytest
import torch

from radd_cli.core.losses import LOSSES
from radd_cli.core.schedule import get_schedule
from radd_cli.device import Precision, autocast
from radd_cli.errors import ConfigError
from radd_cli.evaluation.perplexity import DrawStatistics, evaluate_perplexity, t_quantile_975

LOGLINEAR = get_schedule("loglinear")


def draws_from(oracle, count, seed):
    index = torch.multinomial(oracle.probs, count, replacement=True, generator=torch.Generator().manual_seed(seed))
    return oracle.sequences[index].numpy()


@pytest.mark.parametrize("loss", ["lambda_DCE", "t_DCE", "k_DCE"])
def test_the_interval_contains_the_oracles_known_perplexity(oracle, loss):
    blocks = draws_from(oracle, 200, seed=1)
    report = evaluate_perplexity(oracle, LOGLINEAR, blocks, loss=loss, mc_samples=64, batch_size=256, seed=2)
    sample_value = float(oracle.neg_log_prob(torch.from_numpy(blocks)).mean()) / 4  # these blocks' exact NLL
    population_value = oracle.entropy() / 4  # what the blocks estimate: H(p) per token
    low, high = report.nll_interval
    assert low < sample_value < high  # the Monte-Carlo error is inside the interval ...
    assert abs(report.nll_per_token - population_value) < 3 * report.standard_error  # ... and the data's spread
    assert report.perplexity_interval[0] < math.exp(sample_value) < report.perplexity_interval[1]
    assert report.num_blocks == 200 and report.draws_per_block == 64 and report.total_draws == 200 * 64
    assert 0 < report.monte_carlo_error < report.standard_error  # the data spread dominates here


def test_deterministic_objective_equals_the_direct_computation(tiny_model, inference_precision):
    """In each precision: the report is the objective computed in that precision."""
    blocks = np.random.default_rng(0).integers(0, 16, size=(5, 8))
    report = evaluate_perplexity(tiny_model, LOGLINEAR, blocks, loss="ar_forward", mc_samples=99, batch_size=2,
                                 precision=inference_precision)
    with torch.no_grad(), autocast(torch.device("cpu"), Precision(inference_precision)):
        direct = LOSSES["ar_forward"](tiny_model, torch.from_numpy(blocks), LOGLINEAR).mean().item() / 8
    assert report.nll_per_token == pytest.approx(direct, abs=1e-6) and report.total_draws == 5
    assert report.monte_carlo_error == 0


def test_objectives_agree_within_their_intervals_and_with_a_direct_estimate(tiny_model):
    blocks = np.random.default_rng(1).integers(0, 16, size=(6, 8))
    reports = {
        loss: evaluate_perplexity(tiny_model, LOGLINEAR, blocks, loss=loss, mc_samples=400, batch_size=600)
        for loss in ("lambda_DCE", "t_DCE", "k_DCE")
    }
    for a in reports.values():
        for b in reports.values():
            half = lambda r: (r.nll_interval[1] - r.nll_interval[0]) / 2
            assert abs(a.nll_per_token - b.nll_per_token) <= half(a) + half(b)
    x0 = torch.from_numpy(blocks).repeat(400, 1)  # the library's objective, averaged by hand
    direct = LOSSES["lambda_DCE"](tiny_model, x0, LOGLINEAR, generator=torch.Generator().manual_seed(9))
    direct_nll = direct.mean().item() / 8
    direct_se = direct.view(400, 6).mean(0).std().item() / math.sqrt(6) / 8
    reported = reports["lambda_DCE"]
    assert abs(direct_nll - reported.nll_per_token) < 4 * math.hypot(direct_se, reported.standard_error)


def test_target_se_stops_adding_draws(oracle):
    blocks = draws_from(oracle, 40, seed=3)
    full = evaluate_perplexity(oracle, LOGLINEAR, blocks, mc_samples=200, batch_size=40)
    early = evaluate_perplexity(oracle, LOGLINEAR, blocks, mc_samples=200, batch_size=40, target_se=0.2)
    assert early.standard_error < 0.2 and early.total_draws < full.total_draws
    single = evaluate_perplexity(oracle, LOGLINEAR, blocks[:1], mc_samples=500, batch_size=8, target_se=0.05)
    assert single.num_blocks == 1 and single.standard_error < 0.05 and single.draws_per_block < 500


def test_statistics_and_quantiles():
    stats = DrawStatistics(2)
    stats.add(np.array([0, 0, 1, 1]), np.array([2.0, 4.0, 6.0, 6.0]))
    nll, se, monte_carlo, dof = stats.summary(length=2)
    assert nll == pytest.approx((1.5 + 3.0) / 2) and se == pytest.approx(0.75) and dof == 1
    assert monte_carlo == pytest.approx(math.sqrt(2.0 / 2) / 2 / 2)
    assert t_quantile_975(1) == pytest.approx(12.706) and t_quantile_975(1000) == pytest.approx(1.962, abs=1e-3)
    assert t_quantile_975(31) == pytest.approx(2.040, abs=2e-3)


def test_error_bars_need_enough_draws(oracle):
    blocks = draws_from(oracle, 4, seed=0)
    with pytest.raises(ConfigError, match="a single block needs at least 2 Monte-Carlo draws"):
        evaluate_perplexity(oracle, LOGLINEAR, blocks[:1], mc_samples=1)
    one_draw = evaluate_perplexity(oracle, LOGLINEAR, blocks, mc_samples=1)
    assert one_draw.standard_error > 0 and one_draw.monte_carlo_error is None  # data spread only


def test_bad_settings_are_config_errors(oracle):
    blocks = draws_from(oracle, 4, seed=0)
    with pytest.raises(ConfigError, match="loss: unknown objective 'mse'"):
        evaluate_perplexity(oracle, LOGLINEAR, blocks, loss="mse")
    with pytest.raises(ConfigError, match="3 problems"):
        evaluate_perplexity(oracle, LOGLINEAR, blocks, mc_samples=0, batch_size=0, target_se=-1.0)
