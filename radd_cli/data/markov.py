"""A synthetic language whose likelihood is known exactly: the built-in dataset `markov`.

Documents are 1023 symbols from a sparse second-order Markov chain over 24 symbols (`s0` … `s23`):
the first two are uniform, and each pair of symbols allows only 3 next symbols, with fixed
probabilities. Every other continuation is a *forbidden transition*, the typical error of parallel
decoding (neighbours drawn independently). With the end-of-text token after each, a document is 1024
tokens, so a block of a model's length is (almost always) a stretch of the chain from its middle, and a
model can continue text past its own length. Because the chain is known, a sample's exact negative
log-likelihood, the chain's entropy rate and the forbidden transitions a sampler makes can all be counted
(`radd bench quality`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NAME = "markov"
SYMBOLS = 24
ALLOWED = 3  # next symbols each context allows
DOCUMENT = 1023  # symbols per document; with the end-of-text token, 1024 tokens
SEED = 20250101
SPLITS = {"train": (4000, 1), "validation": (100, 2), "test": (100, 3)}  # documents, seed
END = -1  # symbols_of() marks the end-of-text token with this


@dataclass(frozen=True)
class Score:
    """What the chain says about one sample of symbols."""

    nll: float  # −log p of the symbols whose transition is allowed (nats)
    scored: int  # how many symbols that covers
    forbidden: int  # transitions the chain gives probability 0 (and tokens that are not symbols)
    transitions: int  # transitions looked at


class MarkovChain:
    """The chain: `table[a, b]` is the distribution of the symbol after a, b (zero where forbidden)."""

    def __init__(self, symbols: int = SYMBOLS, allowed: int = ALLOWED, seed: int = SEED):
        rng = np.random.default_rng(seed)
        self.symbols = symbols
        self.table = np.zeros((symbols, symbols, symbols))
        for a in range(symbols):
            for b in range(symbols):
                nexts = rng.choice(symbols, size=allowed, replace=False)
                self.table[a, b, nexts] = rng.dirichlet(np.full(allowed, 2.0))

    def sample(self, count: int, length: int, seed: int) -> np.ndarray:
        """(count, length) symbol indices drawn from the chain."""
        rng = np.random.default_rng(seed)
        out = np.empty((count, length), dtype=np.int64)
        out[:, :2] = rng.integers(0, self.symbols, (count, 2))
        cumulative = self.table.cumsum(axis=-1)
        for t in range(2, length):
            u = rng.random(count)[:, None]
            out[:, t] = (cumulative[out[:, t - 2], out[:, t - 1]] < u).sum(axis=-1).clip(max=self.symbols - 1)
        return out

    def score(self, symbols: list[int | None]) -> Score:
        """Exact log-likelihood of a stretch of the chain (None: a token that is not a symbol; END: the end
        of a document, after which a new one starts). The first two symbols of a stretch are scored by the
        chain's long-run distribution of pairs, those after an END as uniform."""
        nll, scored, forbidden = 0.0, 0, 0
        context: list[int] = []
        fresh_document = False
        for symbol in symbols:
            if symbol == END:
                context, fresh_document = [], True
                continue
            if symbol is None:
                forbidden += 1
                context = []  # nothing after it can be scored against it
                continue
            if len(context) < 2:
                p = 1 / self.symbols if fresh_document else self._start(context, symbol)
            else:
                p = self.table[context[-2], context[-1], symbol]
            if p > 0:
                nll, scored = nll - math.log(p), scored + 1
            else:
                forbidden += 1
            context = [*context[-1:], symbol]
        return Score(nll, scored, forbidden, scored + forbidden)

    def _start(self, context: list[int], symbol: int) -> float:
        pairs = self.stationary_pairs()
        if not context:
            return float(pairs.sum(axis=1)[symbol])
        first = pairs.sum(axis=1)[context[0]]
        return float(pairs[context[0], symbol] / first) if first > 0 else 0.0

    def stationary_pairs(self) -> np.ndarray:
        """The long-run distribution of consecutive pairs (a, b), (K, K)."""
        if not hasattr(self, "_pairs"):
            pairs = np.full((self.symbols, self.symbols), 1.0 / self.symbols**2)
            for _ in range(2000):  # power iteration over (a, b) → (b, c)
                pairs = np.einsum("ab,abc->bc", pairs, self.table)
            self._pairs = pairs
        return self._pairs

    def entropy_rate(self) -> float:
        """Nats per symbol in the long run: the stationary mix of next-symbol entropies."""
        with np.errstate(divide="ignore", invalid="ignore"):
            per_context = -np.where(self.table > 0, self.table * np.log(self.table), 0.0).sum(axis=-1)
        return float((self.stationary_pairs() * per_context).sum())

    def block_nll(self, length: int) -> float:
        """Nats per token of a stretch of `length` symbols from the middle of the chain: its exact entropy."""
        pairs = self.stationary_pairs()
        with np.errstate(divide="ignore", invalid="ignore"):
            pair_entropy = -float(np.where(pairs > 0, pairs * np.log(pairs), 0.0).sum())
        return (pair_entropy + (length - 2) * self.entropy_rate()) / length


def chain() -> MarkovChain:
    return MarkovChain()


def words(symbols) -> str:
    return " ".join(f"s{int(s)}" for s in symbols)


def documents(split: str) -> list[str]:
    """The documents of a split, generated deterministically (no download)."""
    count, seed = SPLITS[split]
    return [words(row) for row in chain().sample(count, DOCUMENT, SEED + seed)]


def tokenizer():
    """A word-level tokenizer: the end-of-text token (id 0) and one token per symbol (s_i → id i + 1)."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from radd_cli.io.tokenizer import EOS, Tokenizer

    vocabulary = {EOS: 0, **{f"s{i}": i + 1 for i in range(SYMBOLS)}}
    raw = RawTokenizer(models.WordLevel(vocabulary, unk_token=EOS))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS, model_max_length=1 << 30)
    return Tokenizer(hf, NAME)


def symbols_of(token_ids: list[int]) -> list[int | None]:
    """Token ids (as the `markov` tokenizer numbers them) → symbols; END for end-of-text, None for others."""
    return [token - 1 if 1 <= token <= SYMBOLS else END if token == 0 else None for token in token_ids]
