"""The built-in Markov language: its words, documents, tokenizer, and exact scores of samples."""

import math

import numpy as np
import pytest

from radd_cli.data import markov, tokens
from radd_cli.data.sources import source
from radd_cli.errors import ConfigError


@pytest.fixture(scope="module")
def chain():
    return markov.chain()


def test_the_language_is_prefix_free_normalised_and_deterministic(chain):
    spellings = chain.lexicon.spellings
    assert len(spellings) == markov.WORDS and all(2 <= len(w) <= 5 for w in spellings)
    assert not any(a != b and b[: len(a)] == a for a in spellings for b in spellings)  # no word starts another
    assert np.allclose(chain.table.sum(-1), 1.0) and ((chain.table > 0).sum(-1) == markov.SUCCESSORS).all()
    emit = np.stack([move[0] for move in chain._moves], axis=-1)  # (W, N, symbols)
    reachable = chain.stationary_states() > 0
    assert np.allclose(emit.sum(-1)[reachable], 1.0)  # each state's next symbol is a distribution
    assert np.array_equal(markov.MarkovChain().table, chain.table)


def brute_force_probability(chain, symbols: list[int]) -> float:
    """p(symbols) as the sum over start states of the one path each allows (spelling is deterministic)."""
    total = 0.0
    start = chain.stationary_states()
    for w, n in zip(*np.nonzero(start)):
        p, word, node = start[w, n], int(w), int(n)
        for symbol in symbols:
            step = chain.lexicon.step(node, symbol)
            reach = chain.table[word] @ chain.lexicon.under[node]
            if step is None or reach == 0:
                p = 0.0
                break
            kind, target = step
            if kind == "node":
                p *= chain.table[word] @ chain.lexicon.under[target] / reach
                node = target
            else:
                p *= chain.table[word, target] / reach
                word, node = target, 0
        total += p
    return total


def test_the_exact_likelihood_is_the_sum_over_hidden_start_states(chain):
    stretch = [int(s) for s in chain.sample(1, 40, seed=3)[0, 25:37]]  # from inside a document
    score = chain.score(stretch)
    assert score.forbidden == 0 and score.scored == 12
    assert score.nll == pytest.approx(-math.log(brute_force_probability(chain, stretch)), rel=1e-9)


def test_true_samples_score_at_the_entropy_rate_without_forbidden_transitions(chain):
    stretches = chain.sample(20, 2100, seed=7)[:, 100:]  # from the middle, where the language is stationary
    scores = [chain.score(list(row)) for row in stretches]
    assert sum(s.forbidden for s in scores) == 0
    per_token = np.array([s.nll / s.scored for s in scores])
    assert abs(per_token.mean() - chain.entropy_rate()) < 3 * per_token.std(ddof=1) / math.sqrt(len(per_token))
    assert 0.2 < chain.entropy_rate() < math.log(markov.SUCCESSORS) / 2
    block, se = chain.block_nll(64, samples=200)
    assert block > chain.entropy_rate() and se < 0.01  # a short stretch also carries where it starts


def test_misspellings_forbidden_words_and_stray_tokens_are_counted(chain):
    first = chain.lexicon.spellings[0]
    start = [markov.END, *first]  # a document opening with word 0
    assert chain.score(start).forbidden == 0
    misspelled = next(c for c in range(markov.SYMBOLS) if chain.lexicon.step(chain.lexicon.node[first[:-1]], c) is None)
    assert chain.score([markov.END, *first[:-1], misspelled]).forbidden == 1
    allowed_openings = {chain.lexicon.spellings[v][0] for v in np.flatnonzero(chain.table[0])}
    wrong = next(c for c in range(markov.SYMBOLS) if c not in allowed_openings)
    assert chain.score([*start, wrong]).forbidden == 1  # no word that may follow word 0 starts so
    stray = chain.score([*start, None, *first])
    assert stray.forbidden == 1 and stray.transitions == 2 * len(first) + 1
    after_end = chain.score([*first, markov.END, *first])  # a new document starts at a word boundary
    assert after_end.forbidden == 0 and after_end.transitions == 2 * len(first)


def test_documents_tokenize_into_blocks_with_the_builtin_tokenizer(tmp_path):
    tokenizer = markov.tokenizer()
    assert tokenizer.vocab_size == markov.SYMBOLS + 1 and tokenizer.eos_id == 0
    blocks, _ = tokens.load_blocks(markov.NAME, "validation", tokenizer, 64, tmp_path)
    assert blocks.shape == (100 * 1024 // 64, 64) and blocks[15, -1] == tokenizer.eos_id  # 1024 tokens a document
    symbols = markov.symbols_of(blocks[16].tolist())  # the second document's start
    assert markov.chain().score([markov.END, *symbols]).forbidden == 0
    opening = blocks[0, :3].tolist()
    assert tokenizer.decode(opening) == " ".join(f"s{s}" for s in markov.symbols_of(opening))
    with pytest.raises(ConfigError, match="split: markov has no split 'all'"):
        source(markov.NAME).documents("all")
