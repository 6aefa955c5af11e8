"""A synthetic language whose likelihood is known exactly: the built-in dataset `markov`.

It has what text has: words. A lexicon of 64 words, each spelled by a fixed string of 2 to 5 symbols
(`s0` … `s31`), no word a prefix of another, follows a sparse Markov chain over words: each word allows
6 next words, with fixed probabilities. So a stretch of symbols is nearly determined inside a word (once
its first symbol or two are known) and free between words. Every symbol the language cannot produce at
that point — a misspelling, or a word that may not follow the previous one — is a *forbidden
transition*, the typical error of parallel decoding (neighbours drawn independently).

A document is 1023 symbols (its last word may be cut short) and the end-of-text token, 1024 tokens, so a
block of a model's length is (almost always) a stretch of the language from the middle of a document, and
a model can continue text past its own length. The language is a hidden-state chain whose state is (the
previous word, how much of the current word is spelled); a sample's exact likelihood is a forward pass
over those states, and the entropy rate is the word chain's entropy per word over the mean word length.
`radd bench quality` scores samples with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NAME = "markov"
SYMBOLS = 32
WORDS = 64
SPELLING = (2, 5)  # shortest and longest word, in symbols
SUCCESSORS = 6  # words each word allows next
DOCUMENT = 1023  # symbols per document; with the end-of-text token, 1024 tokens
SEED = 20250102
SPLITS = {"train": (4000, 1), "validation": (100, 2), "test": (100, 3)}  # documents, seed
END = -1  # symbols_of() marks the end-of-text token with this


@dataclass(frozen=True)
class Score:
    """What the language says about one sample of symbols."""

    nll: float  # −log p of the symbols the language allows where they stand (nats)
    scored: int  # how many symbols that covers
    forbidden: int  # symbols the language gives probability 0 there (and tokens that are not symbols)
    transitions: int  # symbols looked at


class Lexicon:
    """The words and their prefix tree. A node is a proper prefix of some word (node 0: the empty one)."""

    def __init__(self, rng: np.random.Generator, words: int, symbols: int, spelling: tuple[int, int]):
        self.spellings: list[tuple[int, ...]] = []
        while len(self.spellings) < words:
            word = tuple(int(s) for s in rng.integers(0, symbols, rng.integers(spelling[0], spelling[1] + 1)))
            if not any(_prefix(word, old) or _prefix(old, word) for old in self.spellings):
                self.spellings.append(word)
        prefixes = sorted({word[:i] for word in self.spellings for i in range(len(word))}, key=lambda p: (len(p), p))
        self.node = {prefix: n for n, prefix in enumerate(prefixes)}  # node 0 is the empty prefix
        self.lengths = np.array([len(word) for word in self.spellings])  # (W,)
        self.under = np.zeros((len(prefixes), words))  # (N, W): 1 where the word starts with the node's prefix
        for w, word in enumerate(self.spellings):
            for i in range(len(word)):
                self.under[self.node[word[:i]], w] = 1.0
        self.prefixes = prefixes  # node → its prefix
        self.word_of = {word: w for w, word in enumerate(self.spellings)}

    def step(self, node: int, symbol: int) -> tuple[str, int] | None:
        """After `symbol` at `node`: ("node", next node), ("word", the finished word), or None (a misspelling)."""
        spelled = (*self.prefixes[node], symbol)
        if spelled in self.node:
            return "node", self.node[spelled]
        if spelled in self.word_of:
            return "word", self.word_of[spelled]
        return None


def _prefix(short: tuple, long: tuple) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


class MarkovChain:
    """The language: `lexicon` spells the words, `table[w, v]` is the probability that word v follows w.

    Its hidden state while reading is (previous word w, node n of the current word), held as a (W, N)
    belief. `emit[w, n, c]` is the probability of symbol c in state (w, n).
    """

    def __init__(
        self, symbols: int = SYMBOLS, words: int = WORDS, successors: int = SUCCESSORS, seed: int = SEED,
        spelling: tuple[int, int] = SPELLING,
    ):
        rng = np.random.default_rng(seed)
        self.symbols, self.words = symbols, words
        self.lexicon = Lexicon(rng, words, symbols, spelling)
        self.table = np.zeros((words, words))  # (W, W)
        for w in range(words):
            self.table[w, rng.choice(words, size=successors, replace=False)] = rng.dirichlet(np.ones(successors))
        self.word_distribution = _stationary(self.table)  # (W,) long-run share of each word
        self._moves = self._symbol_moves()

    def _symbol_moves(self) -> list[tuple[np.ndarray, ...]]:
        """For each symbol c: (emit (W, N) probabilities, nodes n → their next node m, nodes n → finished word v)."""
        reach = self.table @ self.lexicon.under.T  # (W, N): probability that the next word starts with node's prefix
        moves = []
        for c in range(self.symbols):
            inner_from, inner_to, word_from, word_to = [], [], [], []
            for n in range(len(self.lexicon.node)):
                found = self.lexicon.step(n, c)
                if found is None:
                    continue
                kind, target = found
                (inner_from if kind == "node" else word_from).append(n)
                (inner_to if kind == "node" else word_to).append(target)
            emit = np.zeros_like(reach)  # (W, N)
            with np.errstate(divide="ignore", invalid="ignore"):
                if inner_from:
                    emit[:, inner_from] = reach[:, inner_to] / reach[:, inner_from]
                if word_from:
                    emit[:, word_from] = self.table[:, word_to] / reach[:, word_from]
            indices = (np.array(a, dtype=np.int64) for a in (inner_from, inner_to, word_from, word_to))
            moves.append((np.nan_to_num(emit), *indices))
        return moves

    def sample(self, count: int, length: int, seed: int) -> np.ndarray:
        """(count, length) symbol indices: each row from the start of a document (a word boundary)."""
        rng = np.random.default_rng(seed)
        cumulative = self.table.cumsum(axis=-1)
        out = np.empty((count, length), dtype=np.int64)
        for row in range(count):
            word, spelled = int(rng.choice(self.words, p=self.word_distribution)), []
            while len(spelled) < length:
                spelled += self.lexicon.spellings[word]
                word = min(int((cumulative[word] < rng.random()).sum()), self.words - 1)
            out[row] = spelled[:length]
        return out

    def score(self, symbols: list[int | None]) -> Score:
        """Exact log-likelihood of a stretch of the language (None: a token that is not a symbol; END: the end
        of a document, after which a new one starts at a word boundary). A stretch starts in the long-run
        state of the language; after a forbidden symbol, the reading starts again there."""
        nll, scored, forbidden = 0.0, 0, 0
        for p in self.probabilities(symbols):
            if p is None:
                continue
            if p > 0:
                nll, scored = nll - math.log(p), scored + 1
            else:
                forbidden += 1
        return Score(nll, scored, forbidden, scored + forbidden)

    def probabilities(self, symbols: list[int | None]) -> list[float | None]:
        """p(symbol | the symbols before it) for each entry: 0 where forbidden (or not a symbol), None at END."""
        belief, found = self.stationary_states(), []
        for symbol in symbols:
            if symbol == END:
                belief = self.document_start()
                found.append(None)
                continue
            if symbol is None or not 0 <= symbol < self.symbols:
                belief = self.stationary_states()
                found.append(0.0)
                continue
            p, after = self._read(belief, symbol)
            if p <= 0:  # start again as if the stretch began with this symbol
                _, after = self._read(self.stationary_states(), symbol)
            found.append(p)
            belief = after if after is not None else self.stationary_states()
        return found

    def _read(self, belief: np.ndarray, symbol: int) -> tuple[float, np.ndarray | None]:
        """(p(symbol | belief), the belief after reading it — None when p is 0)."""
        emit, inner_from, inner_to, word_from, word_to = self._moves[symbol]
        joint = belief * emit  # (W, N)
        p = float(joint.sum())
        if p <= 0:
            return 0.0, None
        after = np.zeros_like(belief)
        after[:, inner_to] = joint[:, inner_from]  # still inside the word: the previous word stays
        np.add.at(after[:, 0], word_to, joint[:, word_from].sum(axis=0))  # a word ends: it becomes the previous one
        return p, after / p

    def stationary_states(self) -> np.ndarray:
        """The long-run (W, N) distribution of (previous word, node of the current word) at a symbol."""
        reach = self.table @ self.lexicon.under.T  # (W, N)
        states = self.word_distribution[:, None] * reach
        return states / states.sum()

    def document_start(self) -> np.ndarray:
        """The (W, N) belief at a document's start: a word boundary, the first word drawn from the long-run
        word distribution π (as the successor of a previous word distributed as π, since Σ_w π(w)·table[w, v]
        = π(v))."""
        states = np.zeros((self.words, len(self.lexicon.node)))
        states[:, 0] = self.word_distribution
        return states

    def entropy_rate(self) -> float:
        """Nats per symbol in the long run: the entropy per word over the mean word length."""
        with np.errstate(divide="ignore", invalid="ignore"):
            per_word = -np.where(self.table > 0, self.table * np.log(self.table), 0.0).sum(axis=-1)  # (W,)
        return float(self.word_distribution @ per_word) / self.mean_word_length()

    def mean_word_length(self) -> float:
        return float(self.word_distribution @ self.lexicon.lengths)

    def block_nll(self, length: int, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """Nats per token of a stretch of `length` symbols from the middle of a document: its entropy, as
        the mean exact NLL of `samples` true stretches, with its standard error."""
        stretches = self.sample(samples, length + 64, seed)[:, 64:]
        per_token = np.array([self.score(list(row)).nll / length for row in stretches])
        return float(per_token.mean()), float(per_token.std(ddof=1) / math.sqrt(samples))


def _stationary(table: np.ndarray) -> np.ndarray:
    """The long-run distribution of a Markov chain's states (power iteration from uniform)."""
    share = np.full(len(table), 1.0 / len(table))
    for _ in range(5000):
        share = share @ table
    return share / share.sum()


def chain() -> MarkovChain:
    if not hasattr(chain, "_built"):
        chain._built = MarkovChain()
    return chain._built


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
