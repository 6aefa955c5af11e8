"""How losses and samplers ask a model for log-probabilities: selective scorers and plain modules agree."""

import torch

from radd_cli.core.scoring import SelectiveScorer, log_probs_at, target_log_probs, unwrap, vocabulary


class Plain(torch.nn.Module):
    """Only (B, L) → (B, L, V), like any network a user brings."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.vocab_size, self.mask_id = inner, inner.vocab_size, inner.mask_id

    def forward(self, tokens):
        return self.inner(tokens)


class Wrapper(torch.nn.Module):
    """Stands in for DDP (`.module`)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_selected_positions_agree_between_a_selective_scorer_and_a_plain_module(tiny_model):
    assert isinstance(tiny_model, SelectiveScorer)
    tokens = torch.randint(0, tiny_model.vocab_size + 1, (3, 8), generator=torch.Generator().manual_seed(0))
    where = tokens == tiny_model.mask_id
    where[:, 0] = True
    targets = torch.randint(0, tiny_model.vocab_size, (int(where.sum()),))
    for model in (tiny_model, Wrapper(tiny_model)):
        fast = log_probs_at(model, tokens, where)
        slow = log_probs_at(Plain(tiny_model), tokens, where)
        assert fast.shape == (int(where.sum()), tiny_model.vocab_size) and torch.allclose(fast, slow, atol=1e-6)
        assert torch.allclose(
            target_log_probs(model, tokens, where, targets), target_log_probs(Plain(tiny_model), tokens, where, targets)
        )


def test_unwrap_and_vocabulary_see_through_wrappers(tiny_model):
    compiled_like = torch.nn.Module()
    compiled_like._orig_mod = Wrapper(tiny_model)
    assert unwrap(compiled_like) is tiny_model and unwrap(tiny_model) is tiny_model
    assert vocabulary(Wrapper(tiny_model)) == (16, 16)
