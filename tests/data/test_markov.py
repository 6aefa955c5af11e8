"""The built-in Markov language: its documents, its tokenizer, and exact scores of samples."""

import math

import numpy as np
import pytest

from radd_cli.data import markov, tokens
from radd_cli.data.sources import source
from radd_cli.errors import ConfigError


@pytest.fixture(scope="module")
def chain():
    return markov.chain()


def test_the_chain_is_sparse_normalised_and_deterministic(chain):
    assert np.allclose(chain.table.sum(-1), 1.0)
    assert ((chain.table > 0).sum(-1) == markov.ALLOWED).all()
    assert np.array_equal(markov.MarkovChain().table, chain.table)


def test_true_samples_score_at_the_entropy_rate_without_forbidden_transitions(chain):
    stretches = chain.sample(400, 300, seed=7)[:, 200:]  # from the middle, where the chain is stationary
    scores = [chain.score(list(row)) for row in stretches]
    assert sum(s.forbidden for s in scores) == 0
    per_token = sum(s.nll for s in scores) / sum(s.scored for s in scores)
    assert per_token == pytest.approx(chain.block_nll(100), abs=0.03)
    assert chain.block_nll(10**6) == pytest.approx(chain.entropy_rate(), abs=1e-5)
    assert 0 < chain.entropy_rate() < math.log(markov.ALLOWED)


def test_forbidden_transitions_and_stray_tokens_are_counted(chain):
    a, b = 0, 1
    allowed = int(np.flatnonzero(chain.table[a, b])[0])
    forbidden = int(np.flatnonzero(chain.table[a, b] == 0)[0])
    assert chain.score([a, b, allowed]).forbidden == 0
    assert chain.score([a, b, forbidden]).forbidden == 1
    stray = chain.score([a, b, None, allowed])
    assert stray.forbidden == 1 and stray.transitions == 4
    after_end = chain.score([a, b, markov.END, forbidden, forbidden])  # a new document starts: uniform
    assert after_end.forbidden == 0 and after_end.nll == pytest.approx(2 * math.log(markov.SYMBOLS) + chain.score([a, b]).nll)


def test_documents_tokenize_into_blocks_with_the_builtin_tokenizer(tmp_path):
    tokenizer = markov.tokenizer()
    assert tokenizer.vocab_size == markov.SYMBOLS + 1 and tokenizer.eos_id == 0
    blocks, _ = tokens.load_blocks(markov.NAME, "validation", tokenizer, 64, tmp_path)
    assert blocks.shape == (100 * 1024 // 64, 64) and blocks[15, -1] == tokenizer.eos_id  # 1024 tokens a document
    symbols = markov.symbols_of(blocks[0].tolist())
    assert markov.chain().score(symbols[:63]).forbidden == 0
    assert tokenizer.decode(blocks[0, :3].tolist()) == " ".join(f"s{s}" for s in symbols[:3])
    with pytest.raises(ConfigError, match="split: markov has no split 'all'"):
        source(markov.NAME).documents("all")
