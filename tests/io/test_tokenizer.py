"""The tokenizer wrapper: vocab_size, mask_id, EOS, [MASK] in decoded text, fingerprints, clear load errors."""

import pytest

from radd_cli.errors import DataError
from radd_cli.io.tokenizer import MASK_TEXT, Tokenizer, load_tokenizer, train_tokenizer

TEXTS = [f"The {a} sat on the {b}." for a in ("cat", "dog", "owl") for b in ("mat", "rug")] * 5


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, 280)


def test_a_trained_tokenizer_round_trips_text_and_shows_masks(tokenizer):
    assert tokenizer.mask_id == tokenizer.vocab_size and tokenizer.vocab_size <= 280
    assert tokenizer.decode([tokenizer.eos_id]) == "<|endoftext|>"
    ids = tokenizer.encode("The cat sat on the rug.")
    assert tokenizer.decode(ids) == "The cat sat on the rug."
    assert tokenizer.encode_batch(["The owl", "The dog"]) == [tokenizer.encode("The owl"), tokenizer.encode("The dog")]
    assert tokenizer.decode([ids[0], tokenizer.mask_id, ids[1]]) == f"The{MASK_TEXT} cat"


def test_saved_tokenizers_load_from_their_folder_with_the_same_fingerprint(tmp_path, tokenizer):
    tokenizer.save(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.vocab_size == tokenizer.vocab_size and loaded.fingerprint() == tokenizer.fingerprint()
    assert train_tokenizer(TEXTS, 270).fingerprint() != tokenizer.fingerprint()


def test_missing_tokenizers_and_tokenizers_without_eos_are_clear_errors(tmp_path, tokenizer):
    with pytest.raises(DataError, match="cannot load the tokenizer .*hf download .* --local-dir DIR"):
        load_tokenizer(str(tmp_path / "nowhere"))
    tokenizer.hf.eos_token = None
    with pytest.raises(DataError, match="has no end-of-text token"):
        Tokenizer(tokenizer.hf, "no-eos")
