"""The row pool: a sample is the same whatever runs beside it; windows beyond the model's length; stop at EOS."""

import pytest
import torch

from radd_cli.errors import ConfigError, NonFiniteError
from radd_cli.sampling import RowPool, SamplingConfig, generate, make_job, sample
from tests.sampling.oracle_draws import LOGLINEAR


def test_samples_do_not_depend_on_the_batch_size(tiny_model):
    kwargs = dict(num_samples=6, length=8, steps=16, seeds=[11, 12, 13, 14, 15, 16])
    one = sample(tiny_model, LOGLINEAR, batch_size=1, **kwargs)
    all_at_once = sample(tiny_model, LOGLINEAR, batch_size=6, **kwargs)
    assert torch.equal(one.tokens, all_at_once.tokens) and torch.equal(one.nfe_per_sample, all_at_once.nfe_per_sample)
    alone = sample(tiny_model, LOGLINEAR, num_samples=1, length=8, steps=16, seeds=[13])
    assert torch.equal(alone.tokens[0], one.tokens[2])
    again = sample(tiny_model, LOGLINEAR, num_samples=6, length=8, steps=16, generator=torch.Generator().manual_seed(0))
    twice = sample(
        tiny_model,
        LOGLINEAR,
        num_samples=6,
        length=8,
        steps=16,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(again.tokens, twice.tokens)


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
    assert torch.equal(together.tokens, in_pairs.tokens) and torch.equal(
        together.nfe_per_sample, in_pairs.nfe_per_sample
    )
    assert (together.tokens != tiny_model.mask_id).all() and (together.tokens[:, 0] == 4).all()


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
    with pytest.raises(ConfigError, match="stop_at_eos: needs the end-of-text token"):
        sample(tiny_model, LOGLINEAR, num_samples=1, length=8, stop_at_eos=True)


class PoisonedRows(torch.nn.Module):
    """The tiny model, but NaN log-probabilities for every row whose first token is POISON."""

    POISON = 2

    def __init__(self, model):
        super().__init__()
        self.model, self.vocab_size, self.mask_id, self.config = model, model.vocab_size, model.mask_id, model.config

    def forward(self, tokens):
        out = self.model(tokens).clone()  # (B, L, V)
        out[tokens[:, 0] == self.POISON] = torch.nan
        return out


def test_a_job_whose_rows_fail_fails_alone_and_the_others_are_what_they_are_offline(tiny_model):
    model, mask = PoisonedRows(tiny_model), tiny_model.mask_id
    config = SamplingConfig(steps=8)
    good_template = torch.tensor([1] + [mask] * 7)
    bad_template = torch.tensor([PoisonedRows.POISON] + [mask] * 7)
    goods = [make_job(model, LOGLINEAR, config, length=8, seeds=[seed], template=good_template) for seed in range(16)]
    bad = make_job(model, LOGLINEAR, config, length=8, seeds=[99], template=bad_template)
    pool = RowPool(model, max_rows=17)
    for job in [*goods[:8], bad, *goods[8:]]:  # the poisoned request among 16 good ones, in one batch
        pool.admit(job)
    while not all(job.finished for job in [*goods, bad]):
        pool.step()
    assert isinstance(bad.error, NonFiniteError) and pool.running == 0
    with pytest.raises(NonFiniteError, match="NaN or infinite log-probabilities"):
        bad.result()
    offline = generate(tiny_model, LOGLINEAR, config, num_samples=16, length=8, template=good_template, seeds=range(16))
    assert torch.equal(torch.cat([job.result().tokens for job in goods]), offline.tokens)


def test_cancelled_samples_leave_and_the_rest_finish_as_they_would_alone(tiny_model):
    config = SamplingConfig(steps=16, cache=False)
    job = make_job(tiny_model, LOGLINEAR, config, length=8, seeds=[5, 6, 7])
    pool = RowPool(tiny_model, max_rows=2)  # the third sample waits for room
    pool.admit(job)
    pool.step()
    assert pool.running == 2 and pool.waiting == 1
    assert pool.cancel(job, frozenset({1})) == 1 and pool.running == 1
    while not job.finished:
        pool.step()
    offline = generate(tiny_model, LOGLINEAR, config, num_samples=3, length=8, seeds=[5, 6, 7])
    kept = job.result().tokens
    assert torch.equal(kept[[0, 2]], offline.tokens[[0, 2]])
    assert (kept[1] == tiny_model.mask_id).any()  # stopped part-way
    assert pool.progress(job) == 3


def test_progress_counts_samples_and_the_share_of_each_drawn(tiny_model):
    seen = []
    generate(
        tiny_model,
        LOGLINEAR,
        SamplingConfig(steps=4),
        num_samples=3,
        length=20,
        seeds=range(3),
        batch_size=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert all(total == 3 for _, total in seen) and seen[-1][0] == 3
    assert all(a <= b + 1e-9 for (a, _), (b, _) in zip(seen, seen[1:]))  # never goes back


def test_long_sequences_report_progress_inside_each_window(tiny_model):
    seen = []
    sample(tiny_model, LOGLINEAR, num_samples=2, length=20, steps=4, seeds=range(2), progress=lambda done, total: seen.append(done))
    windows = 4  # 20 positions in windows of 8, every 4: starting at 0, 4, 8 and 12 (aligned to the end)
    assert len(seen) > windows and seen == sorted(seen) and seen[-1] == pytest.approx(2)
