"""Every objective is an unbiased estimate of −log p(x) for a model that knows p (docs/objectives.md)."""

import pytest
import torch

from radd_cli.core.losses import LOSSES, TRAINING_LOSSES, t_dce, t_dse
from radd_cli.core.schedule import get_schedule
from tests.oracle import ExactConditionals

PICKED = torch.tensor([0, 17, 40, 58, 80])  # a few sequences of p, likely and unlikely


@pytest.mark.parametrize("schedule_name", ["loglinear", "geometric"])
@pytest.mark.parametrize("name", TRAINING_LOSSES)
def test_monte_carlo_objectives_are_unbiased_for_the_true_conditionals(oracle, name, schedule_name):
    x = oracle.sequences[PICKED]
    batch = x.repeat(2000, 1)  # copies interleaved, so the stratified draws cover each x
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat(
        [LOSSES[name](oracle, batch, get_schedule(schedule_name), generator=generator) for _ in range(5)]
    ).view(-1, len(PICKED))  # (draws, x)
    mean, standard_error = draws.mean(0), draws.std(0) / draws.shape[0] ** 0.5
    z = (mean - oracle.neg_log_prob(x)) / standard_error
    assert z.abs().max() < 4, f"{name}: z-scores {z.tolist()}"
    assert standard_error.max() < 0.4


def test_a_wrong_model_is_detected_by_the_same_check(oracle):
    wrong = ExactConditionals(vocab_size=3, length=4, seed=1)
    x = oracle.sequences[PICKED]
    draws = torch.cat(
        [LOSSES["k_DCE"](wrong, x.repeat(2000, 1), None, generator=torch.Generator().manual_seed(0)) for _ in range(5)]
    ).view(-1, len(PICKED))
    z = (draws.mean(0) - oracle.neg_log_prob(x)) / (draws.std(0) / draws.shape[0] ** 0.5)
    assert z.abs().max() > 10


@pytest.mark.parametrize("name", ["ar_forward", "ar_backward", "ar_random"])
def test_fixed_order_objectives_are_exact(oracle, name):
    x = oracle.sequences
    value = LOSSES[name](oracle, x, None, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(value, oracle.neg_log_prob(x), atol=1e-5)


def test_t_dse_equals_t_dce_for_a_normalised_model_and_penalises_mass(oracle):
    schedule, x = get_schedule("loglinear"), oracle.sequences.repeat(4, 1)
    dce = t_dce(oracle, x, schedule, generator=torch.Generator().manual_seed(3))
    dse = t_dse(oracle, x, schedule, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(dce, dse, rtol=1e-5, atol=1e-6)

    class TooMuchMass(torch.nn.Module):
        vocab_size, mask_id = oracle.vocab_size, oracle.mask_id

        def forward(self, tokens):
            return oracle(tokens) + 0.1  # Σ_v p_v = e^0.1 > 1

    inflated = t_dse(TooMuchMass(), x, schedule, generator=torch.Generator().manual_seed(3))
    masked_rows = dce > 0
    assert (inflated[masked_rows] > dse[masked_rows]).all()


def test_losses_run_on_the_real_network_with_gradients(tiny_model):
    tiny_model.train()
    x0 = torch.randint(0, tiny_model.vocab_size, (4, tiny_model.config.length))
    for name in ("lambda_DCE", "t_DCE", "t_DSE", "k_DCE"):
        loss = LOSSES[name](tiny_model, x0, get_schedule("loglinear"), generator=torch.Generator().manual_seed(0))
        assert loss.shape == (4,) and loss.dtype == torch.float64 and torch.isfinite(loss).all()
        tiny_model.zero_grad()
        loss.mean().backward()
        assert tiny_model.vocab_embed.embedding.grad.abs().sum() > 0


# Conditioning: a `given` prompt is never masked and never scored; every objective estimates −log p(free | given).


def neg_log_conditional(oracle: ExactConditionals, x: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    """−log p(x at the free positions | x at the given ones) by enumeration, (B,)."""
    agrees = ((oracle.sequences[None] == x[:, None]) | ~given[:, None]).all(-1)  # (B, N)
    return oracle.neg_log_prob(x) + (agrees.double() * oracle.probs).sum(-1).log()


GIVEN_PATTERNS = torch.tensor(
    [[1, 1, 0, 0], [1, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool
)  # a fixed prefix of 2 and of 1, a scattered template, nothing given, everything given


@pytest.mark.parametrize("name", TRAINING_LOSSES)
def test_objectives_with_a_given_prefix_are_unbiased_for_the_conditional(oracle, name):
    x = oracle.sequences[PICKED]  # (5, L), each with its own pattern
    given = GIVEN_PATTERNS
    batch, batch_given = x.repeat(2000, 1), given.repeat(2000, 1)
    generator = torch.Generator().manual_seed(1)
    schedule = get_schedule("loglinear")
    draws = torch.cat(
        [LOSSES[name](oracle, batch, schedule, generator=generator, given=batch_given) for _ in range(5)]
    ).view(-1, len(PICKED))
    truth = neg_log_conditional(oracle, x, given)
    assert truth[-1] == 0 and (draws[:, -1] == 0).all()  # nothing free: nothing to score
    mean, standard_error = draws[:, :-1].mean(0), draws[:, :-1].std(0) / draws.shape[0] ** 0.5
    z = (mean - truth[:-1]) / standard_error
    assert z.abs().max() < 4, f"{name}: z-scores {z.tolist()}"
    # the same check rejects the unconditional value: conditioning matters
    wrong = (mean - oracle.neg_log_prob(x)[:-1]) / standard_error
    assert wrong.abs().max() > 10


@pytest.mark.parametrize("name", ["ar_forward", "ar_backward", "ar_random"])
def test_fixed_order_objectives_with_a_given_prefix_are_exact(oracle, name):
    x = oracle.sequences
    given = GIVEN_PATTERNS[torch.arange(len(x)) % len(GIVEN_PATTERNS)]
    value = LOSSES[name](oracle, x, None, generator=torch.Generator().manual_seed(0), given=given)
    assert torch.allclose(value, neg_log_conditional(oracle, x, given), atol=1e-5)


class Recording(torch.nn.Module):
    """The oracle, recording every input, with its outputs at `poisoned` positions replaced by NaN."""

    def __init__(self, oracle, poisoned: torch.Tensor):
        super().__init__()
        self.oracle, self.poisoned, self.inputs = oracle, poisoned, []
        self.vocab_size, self.mask_id = oracle.vocab_size, oracle.mask_id

    def forward(self, tokens):
        self.inputs.append(tokens.clone())
        out = self.oracle(tokens)
        return out.masked_fill(self.poisoned[: len(tokens), :, None].expand_as(out), float("nan"))


@pytest.mark.parametrize("name", list(LOSSES))
def test_a_prompt_is_never_masked_and_never_in_the_loss(oracle, name):
    x = oracle.sequences[PICKED].repeat(20, 1)
    given = torch.zeros_like(x, dtype=torch.bool)
    given[:, :2] = True
    model = Recording(oracle, given)  # NaN wherever the prompt is: any use of it would show
    value = LOSSES[name](model, x, get_schedule("loglinear"), generator=torch.Generator().manual_seed(0), given=given)
    assert torch.isfinite(value).all()
    assert model.inputs and all(torch.equal(seen[:, :2], x[: len(seen), :2]) for seen in model.inputs)
    assert any((seen[:, 2:] == oracle.mask_id).any() for seen in model.inputs)  # the response was masked


def test_without_a_given_mask_the_draws_are_those_of_plain_text(oracle):
    x = oracle.sequences[PICKED].repeat(4, 1)
    nothing = torch.zeros_like(x, dtype=torch.bool)
    for name in LOSSES:
        plain = LOSSES[name](oracle, x, get_schedule("loglinear"), generator=torch.Generator().manual_seed(5))
        conditioned = LOSSES[name](
            oracle, x, get_schedule("loglinear"), generator=torch.Generator().manual_seed(5), given=nothing
        )
        assert torch.allclose(plain, conditioned, atol=1e-9), name
