"""Generative quality of samples: perplexity under a judge causal LM, unigram entropy, distinct-n.

Generative perplexity alone rewards degenerate text (a sample that repeats one word scores well),
so it is always reported with the unigram entropy of each sample (docs/evaluation.md): a sampler whose
draws lose precision shows lower perplexity *and* lower entropy.

The judge is any Hugging Face causal LM (GPT-2 large in the literature). Each text is tokenized
with the judge's tokenizer and scored after the judge's BOS token (GPT-2: <|endoftext|>), so the
first real token is scored too. A text longer than the judge's context is cut into consecutive,
non-overlapping windows of context - 1 tokens, each scored after its own BOS token: every token
is scored exactly once and windows are independent, at the cost of context at window starts.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from radd_cli.errors import DataError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DISTINCT_ORDERS = (1, 2, 3, 4)


def load_judge(
    name_or_path: str, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A judge causal LM and its tokenizer, by Hub name or from a local folder; in float32, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch.float32)
    except (OSError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if Path(str(name_or_path)).expanduser().exists():  # a local folder: say what is wrong with it
            raise DataError(
                f"the judge folder {name_or_path} does not hold a causal LM with its tokenizer ({reason}); give a "
                "folder saved with save_pretrained (config.json, weights, tokenizer files)"
            ) from error
        raise DataError(
            f"cannot load the judge model {str(name_or_path)!r} ({reason}). Offline, download it where the Hub "
            f"is reachable (`hf download {name_or_path} --local-dir DIR`) and pass DIR instead"
        ) from error
    return model.to(device).eval(), tokenizer


def unigram_entropy(token_ids: Sequence[int]) -> float:
    """Entropy in nats of the empirical unigram distribution of one sample (0 for an empty one)."""
    total = len(token_ids)
    if total == 0:
        return 0.0
    counts = Counter(int(token) for token in token_ids).values()
    # H = -sum c/N log(c/N) = log N - sum c log c / N
    return math.log(total) - sum(count * math.log(count) for count in counts) / total


def distinct_n(samples: list[list[int]], n: int) -> float:
    """Distinct n-grams over all samples / all n-grams (0 when no sample has n tokens).

    n-grams never cross sample boundaries.
    """
    if n < 1:
        raise ValueError(f"distinct-n needs n >= 1, got {n}")
    seen: set[tuple[int, ...]] = set()
    total = 0
    for sample in samples:
        tokens = [int(token) for token in sample]
        grams = [tuple(tokens[start : start + n]) for start in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def _context_length(model, tokenizer) -> int:
    """The judge's context in tokens: n_positions, else max_position_embeddings, else the tokenizer's."""
    config = model.config
    length = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    length = length or tokenizer.model_max_length
    if length is None or length < 2:
        raise DataError(f"the judge has a context of {length} tokens; scoring needs at least 2")
    return int(length)


def _bos_id(tokenizer) -> int:
    """The token every window starts with: the judge's BOS, else its EOS (GPT-2 uses one for both)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if bos is None:
        raise DataError("the judge tokenizer has neither a BOS nor an EOS token to start each scored window")
    return int(bos)


def _judge_tokens(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's judge tokens, without special tokens (windows get theirs when scored)."""
    if not texts:
        return []
    # verbose=False: texts longer than the judge's context are expected here; they are windowed
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [list(ids) for ids in encoded]


def _windows(token_lists: list[list[int]], bos: int, context: int) -> list[tuple[int, list[int]]]:
    """(text index, [bos] + up to context - 1 tokens) for every window of every text, in order."""
    span = context - 1
    windows = []
    for index, tokens in enumerate(token_lists):
        for start in range(0, len(tokens), span):
            windows.append((index, [bos] + tokens[start : start + span]))
    return windows


def _score_windows(model, windows: list[list[int]], device: str | torch.device) -> list[float]:
    """Summed NLL (nats) of all tokens after the first in each window; one right-padded batch."""
    import torch
    import torch.nn.functional as F

    width = max(len(window) for window in windows)
    ids = torch.zeros(len(windows), width, dtype=torch.long)  # (B, T); pad id 0, never attended or scored
    mask = torch.zeros(len(windows), width, dtype=torch.long)  # (B, T)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = torch.tensor(window)
        mask[row, : len(window)] = 1
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits.float()  # (B, T, V)
    targets = ids[:, 1:]  # (B, T-1): position t predicts token t+1
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    nll = nll.view(targets.shape).double() * mask[:, 1:]  # (B, T-1); padded targets contribute 0
    return nll.sum(dim=1).tolist()


def _score(
    model, token_lists: list[list[int]], bos: int, context: int, batch_size: int, device: str | torch.device | None
) -> list[tuple[float, int]]:
    """(summed NLL in nats, scored tokens) per token list, windowed and batched."""
    import torch

    if model.training:
        raise ValueError("the judge model is in training mode (dropout on); call model.eval() first")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = device if device is not None else next(model.parameters()).device
    windows = _windows(token_lists, bos, context)
    totals = [0.0] * len(token_lists)
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            batch = windows[start : start + batch_size]
            for (index, _), nll in zip(batch, _score_windows(model, [w for _, w in batch], device)):
                totals[index] += nll
    return [(total, len(tokens)) for total, tokens in zip(totals, token_lists)]


def judge_nll(
    model, tokenizer, texts: list[str], batch_size: int = 8, device: str | torch.device | None = None
) -> list[tuple[float, int]]:
    """Per text, (summed negative log-likelihood in nats, number of scored tokens) under the judge.

    Every judge token of the text is scored once, the first one after the BOS token; an empty
    text gives (0.0, 0). `device` defaults to the model's; `batch_size` counts windows.
    """
    tokens = _judge_tokens(tokenizer, texts)
    return _score(model, tokens, _bos_id(tokenizer), _context_length(model, tokenizer), batch_size, device)


@dataclass(frozen=True)
class GenerativeReport:
    """Per-sample and summary generative metrics; perplexities are exp(mean NLL per judge token)."""

    perplexity: list[float]
    entropy: list[float]
    num_tokens: list[int]
    token_weighted_perplexity: float
    mean_perplexity: float
    mean_entropy: float
    distinct: dict[int, float]

    def to_dict(self) -> dict:
        """A JSON-ready dict; `distinct` keys become strings ("1".."4")."""
        return {
            "perplexity": list(self.perplexity),
            "entropy": list(self.entropy),
            "num_tokens": list(self.num_tokens),
            "token_weighted_perplexity": self.token_weighted_perplexity,
            "mean_perplexity": self.mean_perplexity,
            "mean_entropy": self.mean_entropy,
            "distinct": {str(n): value for n, value in self.distinct.items()},
        }


def generative_metrics(
    texts: list[str], token_ids: list[list[int]] | None, model, tokenizer, batch_size: int = 8
) -> GenerativeReport:
    """Judge perplexity with unigram entropy and distinct-1..4 for a list of samples.

    Entropy and distinct-n use `token_ids` (the sampler's own tokens) when given, else the judge's
    tokens. Perplexity always uses the judge's tokens; a text with none is an error.
    """
    if not texts:
        raise DataError("no samples to score; generate at least one sample first")
    if token_ids is not None and len(token_ids) != len(texts):
        raise DataError(f"{len(texts)} sample texts but {len(token_ids)} token lists; give one token list per text")
    judge_tokens = _judge_tokens(tokenizer, texts)
    empty = [index for index, tokens in enumerate(judge_tokens) if not tokens]
    if empty:
        raise DataError(f"samples {empty} are empty after judge tokenization; drop empty samples before scoring")
    scores = _score(model, judge_tokens, _bos_id(tokenizer), _context_length(model, tokenizer), batch_size, device=None)
    counted = [list(ids) for ids in token_ids] if token_ids is not None else judge_tokens
    entropy = [unigram_entropy(ids) for ids in counted]
    perplexity = [math.exp(nll / count) for nll, count in scores]
    total_nll = sum(nll for nll, _ in scores)
    total_tokens = sum(count for _, count in scores)
    return GenerativeReport(
        perplexity=perplexity,
        entropy=entropy,
        num_tokens=[count for _, count in scores],
        token_weighted_perplexity=math.exp(total_nll / total_tokens),
        mean_perplexity=sum(perplexity) / len(perplexity),
        mean_entropy=sum(entropy) / len(entropy),
        distinct={n: distinct_n(counted, n) for n in DISTINCT_ORDERS},
    )
