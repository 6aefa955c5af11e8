"""A thin wrapper over a transformers fast tokenizer: vocab_size, mask_id and eos for RADD.

The mask token is not one of the real tokens: it is id `vocab_size`, one past them. A tokenizer whose mask
token is its last id (as in the transformers layout radd writes) has that token as radd's mask.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Iterable

from radd_cli.errors import DataError

EOS = "<|endoftext|>"
# Vocabulary sizes of well-known tokenizers, for what must not need their download (a dry run, named sizes).
KNOWN_VOCABULARIES = {"gpt2": 50257}  # the published models' GPT-2 tokenizer
MASK_TEXT = "[MASK]"


class Tokenizer:
    def __init__(self, hf_tokenizer, name: str):
        self.hf = hf_tokenizer
        self.name = name
        size = len(hf_tokenizer)
        self.vocab_size = size - 1 if hf_tokenizer.mask_token_id == size - 1 else size
        self.mask_id = self.vocab_size
        eos = hf_tokenizer.eos_token_id
        if eos is None:
            raise DataError(f"tokenizer {name} has no end-of-text token; radd separates documents with one")
        self.eos_id = eos

    def encode(self, text: str) -> list[int]:
        return self.hf(text, add_special_tokens=False)["input_ids"]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.hf(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; mask ids (still-masked positions) show as [MASK]."""
        pieces, run = [], []
        for token in ids:
            if int(token) >= self.vocab_size:
                pieces.append(self.hf.decode(run))
                pieces.append(MASK_TEXT)
                run = []
            else:
                run.append(int(token))
        pieces.append(self.hf.decode(run))
        return "".join(pieces)

    def fingerprint(self) -> str:
        """A short hash of the tokenizer's full definition, for cache keys."""
        return hashlib.sha256(self.hf.backend_tokenizer.to_str().encode()).hexdigest()[:16]

    def save(self, directory: str | Path) -> None:
        self.hf.save_pretrained(str(directory))


def load_tokenizer(name_or_path: str) -> Tokenizer:
    """An HF tokenizer by Hub name (e.g. gpt2) or from a local folder (`radd_cli.data.tokenizer_for` also knows
    the built-in languages' tokenizers by name)."""
    from transformers import AutoTokenizer

    try:
        # Never the folder's own code (a transformers-layout folder has some, for its model): no prompt for it
        # either; transformers' note that it reads the folder's config as a plain one is not news here.
        with _quiet("transformers.configuration_utils"):
            hf = AutoTokenizer.from_pretrained(str(name_or_path), use_fast=True, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise DataError(
            f"cannot load the tokenizer {name_or_path!r} ({str(error).strip().splitlines()[0]}). Offline, download "
            f"it where the Hub is reachable (`hf download {name_or_path} --local-dir DIR`) and give DIR instead"
        ) from error
    return Tokenizer(hf, str(name_or_path))


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Warnings of one logger off for the duration."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer trained on `texts`, with <|endoftext|> as its only special token."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=EOS, model_max_length=1 << 30)
    return Tokenizer(hf, f"bpe-{vocab_size}")
