"""Training and evaluation objectives (docs/objectives.md): pure functions of (model, x0, schedule).

Each returns, per sequence, an unbiased Monte-Carlo estimate (float64, nats per sequence) of an upper
bound on −log p(x0); only masked positions contribute. With a network that knows the true
conditionals every objective has expectation −log p(x0), up to the t_eps / eps truncations.

`given` (optional, bool (B, L)) marks positions that are conditioned on: never masked, never scored
(a prompt, docs/fine-tuning.md). Every objective then estimates −log p(x0 at the free positions | x0 at
the given ones), with the same guarantees; a given position may hold the mask id (always hidden).
The caller owns train/eval mode and gradient state.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from radd_cli.core import masking
from radd_cli.core.schedule import Schedule
from radd_cli.core.scoring import log_probs_at, target_log_probs, vocabulary
from radd_cli.validation import choices_of

T_EPS = 1e-3  # smallest t drawn by the t-objectives

Objective = Callable[..., torch.Tensor]


def masked_nll(model: nn.Module, x_t: torch.Tensor, masked: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Σ over the masked positions of each row of −log p(x0^i | x_t), float64 (B,)."""
    log_p = target_log_probs(model, x_t, masked, x0[masked])  # (N,)
    rows = masked.nonzero(as_tuple=True)[0]  # (N,) row of each masked position, row-major like log_p
    return torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device).index_add_(0, rows, -log_p.double())


def _draw_t(x0: torch.Tensor, generator) -> torch.Tensor:
    """Stratified t in [T_EPS, 1), float64 (B,)."""
    return T_EPS + (1 - T_EPS) * masking.stratified_uniform(x0.shape[0], generator, x0.device)


def lambda_dce(
    model: nn.Module, x0: torch.Tensor, schedule: Schedule | None = None, *, generator=None, given=None
):
    """λ-DCE: λ ~ U(0, 1]; mask each free token with probability λ; (1/λ) · Σ_masked −log p_i.

    Unbiased because −log p(x0) = ∫_0^1 (1/λ) E_λ[Σ_masked −log p_i] dλ. The schedule is not used.
    """
    _, mask_id = vocabulary(model)
    lam = 1.0 - masking.stratified_uniform(x0.shape[0], generator, x0.device)  # (0, 1], never 0
    x_t, masked = masking.mask_with_probability(x0, lam, mask_id, generator, given)
    return masked_nll(model, x_t, masked, x0) / lam


def t_dce(model: nn.Module, x0: torch.Tensor, schedule: Schedule, *, generator=None, given=None):
    """t-DCE: t ~ U[t_eps, 1); mask with probability 1 − e^{−σ(t)}; σ'(t)/(e^{σ(t)} − 1) · Σ_masked −log p_i.

    This is the paper's formula. The published implementation adds log(e^{σ(t)} − 1) to each masked
    term; that term integrates to zero over t and carries no gradient, so it is left out here (it
    only adds variance to evaluations). With it left out, t-DSE equals t-DCE for a normalised model.
    """
    _, mask_id = vocabulary(model)
    t = _draw_t(x0, generator)
    x_t, masked = masking.mask_with_probability(x0, schedule.mask_probability(t), mask_id, generator, given)
    weight = schedule.rate(t) / schedule.expm1_total(t)
    return weight * masked_nll(model, x_t, masked, x0)


def t_dse(model: nn.Module, x0: torch.Tensor, schedule: Schedule, *, generator=None, given=None):
    """t-DSE (denoising score entropy) with scores s_v = p_v·r, r = 1/(e^σ − 1).

    σ'(t) · Σ_masked [r·(−log s_{x0}) + Σ_v s_v + r·(log r − 1)], computed in the equal, cancellation-free
    form σ'(t)·r · Σ_masked [−log p_{x0} + (Σ_v p_v − 1)]. For a normalised model (Σ_v p_v = 1) it is the
    t-DCE value; the Σ_v p_v term is what penalises an unnormalised one.
    """
    _, mask_id = vocabulary(model)
    t = _draw_t(x0, generator)
    x_t, masked = masking.mask_with_probability(x0, schedule.mask_probability(t), mask_id, generator, given)
    log_p = log_probs_at(model, x_t, masked).double()  # (N, V)
    target = log_p.gather(-1, x0[masked][:, None]).squeeze(-1)
    per_position = -target + (log_p.exp().sum(-1) - 1.0)
    rows = masked.nonzero(as_tuple=True)[0]
    per_row = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device).index_add_(0, rows, per_position)
    return schedule.rate(t) / schedule.expm1_total(t) * per_row


def k_dce(model: nn.Module, x0: torch.Tensor, schedule: Schedule | None = None, *, generator=None, given=None):
    """k-DCE (any-order autoregressive): k ~ U{1..n}; mask exactly k of the n free positions; (n/k) · Σ_masked −log p_i.

    Without `given`, n = L. A row with no free position scores 0.
    """
    _, mask_id = vocabulary(model)
    free = masking.free_count(x0, given)  # (B,) n
    u = masking.stratified_uniform(x0.shape[0], generator, x0.device)
    k = torch.minimum((u * free).long() + 1, free)  # (B,) in 1..n
    x_t, masked = masking.mask_exactly(x0, k, mask_id, generator, given)
    return free.double() / k.clamp(min=1).double() * masked_nll(model, x_t, masked, x0)


def fixed_order_nll(model: nn.Module, x0: torch.Tensor, order: torch.Tensor, given=None) -> torch.Tensor:
    """Exact −log p(x0) under the autoregressive factorisation in `order` (B, L): L network calls.

    Call j masks the positions order[j:] and scores position order[j]. With `given`, only the free
    positions are ordered (in their relative order) and masked: −log p(free | given), in as many calls
    as the most free positions of a row.
    """
    _, mask_id = vocabulary(model)
    free = torch.ones_like(x0, dtype=torch.bool) if given is None else ~given  # (B, L)
    if given is not None:
        order = masking.free_first(order, given)
    place = masking.places(order)  # (B, L): where each position comes in its row's order
    total = torch.zeros(x0.shape[0], dtype=torch.float64, device=x0.device)
    for j in range(int(free.sum(dim=1).max()) if x0.numel() else 0):
        x_t = torch.where((place >= j) & free, mask_id, x0)
        total += masked_nll(model, x_t, (place == j) & free, x0)
    return total


def ar_forward(model: nn.Module, x0: torch.Tensor, schedule: Schedule | None = None, *, generator=None, given=None):
    """Left-to-right autoregressive NLL (exact, deterministic; for evaluation)."""
    order = torch.arange(x0.shape[1], device=x0.device).expand_as(x0)
    return fixed_order_nll(model, x0, order, given)


def ar_backward(model: nn.Module, x0: torch.Tensor, schedule: Schedule | None = None, *, generator=None, given=None):
    """Right-to-left autoregressive NLL (exact, deterministic; for evaluation)."""
    order = torch.arange(x0.shape[1] - 1, -1, -1, device=x0.device).expand_as(x0)
    return fixed_order_nll(model, x0, order, given)


def ar_random(model: nn.Module, x0: torch.Tensor, schedule: Schedule | None = None, *, generator=None, given=None):
    """Autoregressive NLL in a random order drawn for each row (exact for that order)."""
    keys = masking.uniform(x0.shape, generator, x0.device)
    return fixed_order_nll(model, x0, keys.argsort(dim=1), given)


LOSSES: dict[str, Objective] = {
    "lambda_DCE": lambda_dce,
    "t_DCE": t_dce,
    "t_DSE": t_dse,
    "k_DCE": k_dce,
    "ar_forward": ar_forward,
    "ar_backward": ar_backward,
    "ar_random": ar_random,
}
TRAINING_LOSSES = ("lambda_DCE", "t_DCE", "t_DSE", "k_DCE")  # one network call per sequence
DETERMINISTIC_LOSSES = ("ar_forward", "ar_backward")  # one Monte-Carlo draw is exact
Loss = choices_of("Loss", LOSSES, __name__)  # any objective: evaluation
TrainingLoss = choices_of("TrainingLoss", TRAINING_LOSSES, __name__)  # the ones that train: one call per sequence
