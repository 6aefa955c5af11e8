"""The samplers after the paper, on the exact oracle: exact where it holds, calls counted where they adapt,
and the options around them (blocks, windows beyond the model's length, end of text, guidance)."""

import math

import pytest
import torch

from radd_cli.core.schedule import get_schedule
from radd_cli.errors import ConfigError
from radd_cli.sampling import sample
from tests.oracle import chi_square, chi_square_limit
from tests.sampling.test_sampling import assert_draws_from, counts_of

LOGLINEAR = get_schedule("loglinear")
DRAWS = 6000


def draws(oracle, seed, num_samples=DRAWS, **settings):
    return sample(oracle, LOGLINEAR, num_samples=num_samples, length=4, generator=torch.Generator().manual_seed(seed), **settings)


@pytest.mark.parametrize(
    "settings",
    [
        dict(method="confidence", steps=4, confidence="margin"),
        dict(method="confidence", steps=4, confidence="entropy"),
        dict(method="threshold", threshold=1.0, confidence="margin"),
        dict(method="first_hitting"),
        dict(method="tweedie", steps=400, block_length=2),
        dict(method="remdm", steps=60, eta=0.0),
    ],
    ids=["confidence-margin", "confidence-entropy", "threshold-1", "first-hitting", "blocks", "remdm-eta-0"],
)
def test_samplers_that_are_exact_draw_from_p(oracle, settings):
    """One token per call in an order that depends only on the visible tokens is exact; so is σ ≡ 0."""
    result = draws(oracle, 11, **settings)
    assert_draws_from(oracle, result.tokens, oracle.probs, wrong=oracle.product_of_marginals())


def test_confidence_by_the_drawn_tokens_probability_is_not_exact(oracle):
    """Choosing where to unmask by the proposal's own probability biases towards likely tokens."""
    counts = counts_of(oracle, draws(oracle, 12, method="confidence", steps=4).tokens)
    statistic, dof = chi_square(counts, oracle.probs)
    assert statistic > 10 * chi_square_limit(dof)


def test_confidence_follows_the_step_count_and_threshold_adapts(oracle):
    template = torch.tensor([oracle.mask_id, 1, oracle.mask_id, oracle.mask_id])
    for steps, calls in ((1, 1), (2, 2), (3, 3), (10, 3)):
        result = draws(oracle, 13, num_samples=50, method="confidence", steps=steps, template=template)
        assert (result.nfe_per_sample == calls).all() and (result.tokens[:, 1] == 1).all()
    everything_at_once = draws(oracle, 14, method="threshold", threshold=1e-9)
    assert (everything_at_once.nfe_per_sample == 1).all()  # the product of the marginals, in one call
    assert_draws_from(oracle, everything_at_once.tokens, oracle.product_of_marginals(), wrong=oracle.probs)
    middle = draws(oracle, 15, method="threshold", threshold=0.5)
    assert 1 < middle.nfe < 4 and middle.nfe_per_sample.max() <= 4


def test_greedy_proposals_are_the_most_likely_tokens(oracle):
    result = draws(oracle, 16, num_samples=20, method="confidence", steps=4, greedy=True, confidence="margin")
    assert (result.tokens == result.tokens[0]).all()  # no randomness left


def test_the_first_hitting_sampler_matches_the_published_algorithm(oracle):
    """Zheng et al.'s first-hitting sampler, written out: draw the next time, unmask one uniformly chosen
    masked position with a draw from the network. Both samplers must draw the same distribution."""
    generator = torch.Generator().manual_seed(17)
    x = torch.full((DRAWS, 4), oracle.mask_id)
    t = torch.ones(DRAWS, dtype=torch.float64)
    for remaining in range(4, 0, -1):
        t = t * torch.rand(DRAWS, generator=generator, dtype=torch.float64) ** (1 / remaining)  # τ = t·u^{1/n}
        masked = (x == oracle.mask_id).double()
        chosen = torch.multinomial(masked, 1, generator=generator).squeeze(1)  # uniformly among the masked
        probs = oracle(x)[torch.arange(DRAWS), chosen].double().exp()
        x[torch.arange(DRAWS), chosen] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    assert (t > 0).all() and (t < 1).all()
    published = counts_of(oracle, x)
    ours = counts_of(oracle, draws(oracle, 18, method="first_hitting").tokens)
    table = torch.stack([published, ours]).double()
    seen = table.sum(0) > 0
    expected = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / table.sum()
    statistic = float(((table - expected)[:, seen] ** 2 / expected[:, seen]).sum())
    assert statistic < chi_square_limit(int(seen.sum()) - 1)
    assert chi_square(published, oracle.probs)[0] < chi_square_limit(chi_square(published, oracle.probs)[1])


class Recording(torch.nn.Module):
    """Wraps a model and keeps every input it is called with."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.vocab_size, self.mask_id = inner, inner.vocab_size, inner.mask_id
        self.length = getattr(inner, "length", None)
        self.inputs = []

    def forward(self, tokens):
        self.inputs.append(tokens.clone())
        return self.inner(tokens)


def test_remasking_returns_tokens_to_the_mask_and_counts_every_call(oracle):
    model = Recording(oracle)
    result = sample(model, LOGLINEAR, num_samples=40, length=4, steps=30, method="remdm", eta=0.5, seeds=range(40))
    assert (result.nfe_per_sample == 30).all() and len(model.inputs) == 30
    remasked = sum(
        int(((before != oracle.mask_id) & (after == oracle.mask_id)).sum())
        for before, after in zip(model.inputs, model.inputs[1:])
    )
    assert remasked > 0 and (result.tokens != oracle.mask_id).all()
    plain = sample(oracle, LOGLINEAR, num_samples=40, length=4, steps=30, method="remdm", eta=0.0, seeds=range(40))
    assert not torch.equal(plain.tokens, result.tokens)


@pytest.mark.parametrize("remasking", ["cap", "rescale", "conf", "loop"])
def test_every_remasking_schedule_finishes_every_position(oracle, remasking):
    result = draws(oracle, 19, num_samples=200, method="remdm", steps=40, remasking=remasking, eta=0.1)
    assert (result.tokens != oracle.mask_id).all() and (result.nfe_per_sample == 40).all()


def test_guidance_with_weight_zero_is_no_guidance_and_costs_two_calls_a_step(tiny_model):
    template = torch.full((8,), tiny_model.mask_id)
    template[:3] = torch.tensor([1, 2, 3])
    common = dict(num_samples=5, length=8, steps=8, template=template, seeds=range(5))
    plain = sample(tiny_model, LOGLINEAR, **common)
    unguided = sample(tiny_model, LOGLINEAR, guidance=0.0, **common)
    assert torch.equal(plain.tokens, unguided.tokens)
    guided = sample(tiny_model, LOGLINEAR, guidance=1.5, **common)
    assert torch.equal(guided.nfe_per_sample, 2 * plain.nfe_per_sample)
    assert (guided.tokens[:, :3] == torch.tensor([1, 2, 3])).all()
    with pytest.raises(ConfigError, match="guidance needs given tokens"):
        sample(tiny_model, LOGLINEAR, num_samples=2, length=8, guidance=1.0)


def test_windows_write_past_the_models_length_keeping_fixed_tokens(tiny_model):
    template = torch.full((20,), tiny_model.mask_id)
    template[[0, 9, 19]] = torch.tensor([5, 6, 7])  # fixed tokens in the first, a middle and the last window
    common = dict(length=20, steps=8, template=template, seeds=range(4))
    result = sample(tiny_model, LOGLINEAR, num_samples=4, batch_size=4, **common)
    assert result.tokens.shape == (4, 20) and (result.tokens != tiny_model.mask_id).all()
    assert (result.tokens[:, [0, 9, 19]] == torch.tensor([5, 6, 7])).all()
    windows = 4  # the model's length is 8: windows start at 0, 4, 8 and 12 (the last aligned to the end)
    assert (result.nfe_per_sample > windows).all() and (result.nfe_per_sample <= windows * 8).all()
    one_by_one = sample(tiny_model, LOGLINEAR, num_samples=4, batch_size=1, **common)
    assert torch.equal(one_by_one.tokens, result.tokens)


def test_stop_at_eos_trims_and_stops_generating_windows(tiny_model):
    eos = 3
    common = dict(num_samples=12, length=24, steps=8, seeds=range(12), eos_id=eos)
    full = sample(tiny_model, LOGLINEAR, **common)
    stopped = sample(tiny_model, LOGLINEAR, stop_at_eos=True, **common)
    for row, kept in zip(stopped.tokens, stopped.sequences()):
        assert eos not in kept and (len(kept) == 24 or row[len(kept)] == eos)
    assert (stopped.lengths < 24).any() and (stopped.nfe_per_sample <= full.nfe_per_sample).all()
    assert (stopped.nfe_per_sample < full.nfe_per_sample).any()  # later windows were not generated
    with pytest.raises(ConfigError, match="stop_at_eos needs the end-of-text token"):
        sample(tiny_model, LOGLINEAR, num_samples=1, length=8, stop_at_eos=True)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(method="threshold", threshold=0.0), "threshold: must be greater than 0"),
        (dict(method="threshold", threshold=1.5), "threshold: must be at most 1"),
        (dict(method="threshold"), "--method threshold needs --threshold"),
        (dict(method="confidence", steps=0), "steps: must be at least 1"),
        (dict(method="confidence", steps=1, block_length=2), "--steps 1 is fewer than the 4 blocks"),
        (dict(method="remdm", eta=-0.1), "eta: must be at least 0"),
        (dict(block_length=3), "--block-length 3 must divide the sequence length 8"),
        (dict(threshold=0.5), "--threshold applies to threshold, not to tweedie"),
        (dict(method="ordered", block_length=2), "--block-length applies to tweedie, euler, confidence"),
        (dict(method="confidence", remasking="conf"), "--remasking applies to remdm, not to confidence"),
        (dict(guidance=-1.0), "guidance: must be at least 0"),
    ],
)
def test_bad_settings_are_config_errors(tiny_model, settings, message):
    with pytest.raises(ConfigError, match=message):
        sample(tiny_model, LOGLINEAR, num_samples=2, length=8, **settings)


def test_the_thresholds_calls_adapt_to_a_sure_network():
    class Sure(torch.nn.Module):
        """Certain of token 0 everywhere: a threshold sampler needs a single call."""

        vocab_size, mask_id = 4, 4

        def forward(self, tokens):
            log_p = torch.full((*tokens.shape, 4), -math.inf)
            log_p[..., 0] = 0.0
            return log_p

    result = sample(Sure(), LOGLINEAR, num_samples=3, length=16, method="threshold", threshold=0.9, seeds=range(3))
    assert (result.nfe_per_sample == 1).all() and (result.tokens == 0).all()


@pytest.mark.parametrize(
    "settings",
    [
        dict(method="tweedie", steps=8, block_length=4),
        dict(method="euler", steps=8, cache=False),
        dict(method="ordered", order="random"),
        dict(method="first_hitting"),
        dict(method="confidence", steps=5, confidence="entropy"),
        dict(method="threshold", threshold=0.2, block_length=4),
        dict(method="remdm", steps=12, remasking="conf"),
        dict(method="remdm", steps=12, remasking="loop", eta=0.3),
        dict(method="tweedie", steps=8, guidance=0.5),
    ],
    ids=lambda settings: "-".join(str(v) for v in settings.values()),
)
def test_every_sampler_gives_a_sample_the_same_tokens_whatever_runs_beside_it(tiny_model, settings):
    """Rows join and leave the running batch at different calls; each draws from its own generator."""
    template = torch.full((8,), tiny_model.mask_id)
    template[0] = 4
    common = dict(num_samples=7, length=8, template=template, seeds=[3, 1, 4, 1, 5, 9, 2], **settings)
    together = sample(tiny_model, LOGLINEAR, batch_size=7, **common)
    in_pairs = sample(tiny_model, LOGLINEAR, batch_size=2, **common)
    assert torch.equal(together.tokens, in_pairs.tokens) and torch.equal(together.nfe_per_sample, in_pairs.nfe_per_sample)
    assert (together.tokens != tiny_model.mask_id).all() and (together.tokens[:, 0] == 4).all()
