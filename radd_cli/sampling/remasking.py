"""ReMDM (Wang et al., 2025): decoded tokens may return to the mask, so more steps buy quality.

Over the diffusion time grid, with α_t = e^{−σ(t)} the chance a position is unmasked at t, a step t → s
remasks each decoded token with probability σ_t, bounded by σ_max = min(1, (1 − α_s)/α_t), and unmasks
each masked position with probability (α_s − (1 − σ_t)·α_t)/(1 − α_t), so the share of unmasked positions
still follows α. σ ≡ 0 is the tweedie sampler. The schedules (`--remasking`, strength `--eta` = η):

- `cap`: σ_t = min(η, σ_max);  `rescale`: σ_t = η·σ_max;
- `conf`: σ_max shared out over the decoded tokens by softmax(−ψ), ψ the probability the network now
  gives each decoded token (the least confident are remasked most);
- `loop`: α rises to α_on = 0.9 over the steps down to t_on = 0.55, stays there until t_off = 0.05 while
  tokens are remasked with σ = min(η, σ_max) and unmasked to balance, then rises to 1 (ReMDM-loop's values).

Every row is called at every step: a remasked row's cached output is stale, so the calls are all counted.
The last step unmasks everything left and remasks nothing.
"""

from __future__ import annotations

import torch

from radd_cli.sampling.config import Remasking
from radd_cli.sampling.engine import Query, Rows, Sampler, register
from radd_cli.sampling.nfe import time_grid
from radd_cli.sampling.strategy import draw_categorical

LOOP_T_ON, LOOP_T_OFF, LOOP_ALPHA_ON = 0.55, 0.05, 0.9


@register
class ReMDM(Sampler):
    name = "remdm"
    settings = frozenset({"steps", "remasking", "eta"})
    remasks = True

    def __init__(self, *args):
        super().__init__(*args)
        self.alphas = self._alphas()  # (steps + 1,) float64, rising from about 0 to 1
        self.looping = self._loop_phase()  # (steps,) bool: the steps that hold α fixed

    def _alphas(self) -> torch.Tensor:
        if self.config.remasking != Remasking.loop:
            return 1 - self.schedule.mask_probability(time_grid(self.steps))
        t = time_grid(self.steps)
        up = 1 - self.schedule.mask_probability(t)  # the ordinary α, rescaled into the phases below
        start = float(up[0])
        rising = start + (LOOP_ALPHA_ON - start) * ((1 - t) / (1 - LOOP_T_ON)).clamp(max=1.0)
        final = LOOP_ALPHA_ON + (1 - LOOP_ALPHA_ON) * ((LOOP_T_OFF - t) / LOOP_T_OFF).clamp(min=0.0)
        return torch.where(t > LOOP_T_ON, rising, torch.where(t > LOOP_T_OFF, torch.full_like(t, LOOP_ALPHA_ON), final))

    def _loop_phase(self) -> torch.Tensor:
        looping = torch.zeros(self.steps, dtype=torch.bool)
        if self.config.remasking == Remasking.loop:
            t = time_grid(self.steps)
            looping = (t[:-1] <= LOOP_T_ON) & (t[1:] > LOOP_T_OFF)
        return looping

    def query(self, rows: Rows) -> Query:
        return Query.every_row(rows, rows.free.clone())  # masked positions to draw, decoded ones to judge

    def update(self, rows: Rows, query: Query, log_probs: torch.Tensor) -> None:
        step = rows.calls  # (B,): rows joined the batch at different times, so each has its own step
        alphas = self.alphas.to(step.device)
        now, then = alphas[step][:, None], alphas[step + 1][:, None]  # (B, 1)
        last = (step == self.steps - 1)[:, None]  # (B, 1): unmask everything left, remask nothing
        masked = rows.free & (rows.tokens == self.mask_id)  # (B, L)
        decoded = rows.free & ~masked
        u = rows.uniforms(3, self.length)  # (B, 3, L): remask?, unmask?, which token
        sigma = self.remask_probabilities(log_probs, rows, query, decoded, now, then, step).masked_fill(last, 0.0)
        mean_sigma = (sigma * decoded).sum(1, keepdim=True) / decoded.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
        unmask = ((then - (1 - mean_sigma) * now) / (1 - now).clamp(min=1e-12)).clamp(0, 1).masked_fill(last, 1.0)
        appear = masked & (u[:, 1] < unmask)
        vanish = decoded & (u[:, 0] < sigma)
        # Tokens are drawn only where they appear: the same draws as at every position, far less work.
        probs = self.config.strategy.probabilities(log_probs[appear[query.where]])  # (appearing, V)
        rows.tokens[appear] = draw_categorical(probs, u[:, 2][appear])
        rows.tokens[vanish] = self.mask_id

    def remask_probabilities(self, log_probs, rows, query, decoded, now, then, step) -> torch.Tensor:
        """(B, L) σ for each position (used at decoded ones) at each row's step."""
        bound = torch.where(now > 0, ((1 - then) / now.clamp(min=1e-12)).clamp(0.0, 1.0), 0.0)  # (B, 1): σ_max
        eta, kind = self.config.eta, self.config.remasking
        full = torch.zeros(decoded.shape, dtype=torch.float64, device=decoded.device)
        if kind == Remasking.cap:
            return full + bound.clamp(max=eta)
        if kind == Remasking.rescale:
            return full + eta * bound
        if kind == Remasking.loop:
            return full + bound.clamp(max=eta) * self.looping.to(step.device)[step][:, None]
        held = torch.zeros_like(full)  # conf: ψ = the probability the network now gives each decoded token
        tokens = rows.tokens[query.where].clamp(max=log_probs.shape[-1] - 1)[:, None]  # (n, 1)
        held[query.where] = log_probs.gather(-1, tokens).squeeze(-1).double().exp()
        weights = (-held).masked_fill(~decoded, -torch.inf).softmax(dim=1).nan_to_num(0.0)
        return weights * bound

    def finished(self, rows: Rows) -> torch.Tensor:
        return rows.calls >= self.steps

    def expected_nfe(self, free: int) -> float:
        return float(self.steps)
