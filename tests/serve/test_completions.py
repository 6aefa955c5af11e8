"""A choice's text while its tokens are decoded: streamed deltas, stop strings, the denoising view."""

from __future__ import annotations

import pytest
import torch

from radd_cli.errors import ConfigError
from radd_cli.io.tokenizer import load_tokenizer
from radd_cli.sampling.templates import Infill
from radd_cli.serve.completions import ChoiceText, StreamMode, request_order

TEXT = "Ünïcödé € 😀 the cat sat.  Ωmega"


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    return load_tokenizer(str(tiny_checkpoint))


def unmasking(tokenizer, ids: list[int], seed: int | None):
    """The tokens after each of len(ids) calls that unmask one position each: left to right (seed None)
    or in a random order."""
    tokens = torch.full((len(ids),), tokenizer.mask_id)
    order = (
        range(len(ids))
        if seed is None
        else torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    )
    for position in order:
        tokens[position] = ids[position]
        yield tokens.clone()


def follow(tokenizer, text: str, seed: int | None, stops=(), mode=StreamMode.prefix) -> tuple[ChoiceText, list[str]]:
    ids = tokenizer.encode(text)
    free = torch.ones(len(ids), dtype=torch.bool)
    choice = ChoiceText(
        0,
        seed,
        Infill(torch.full((len(ids),), tokenizer.mask_id), free),
        slice(0, len(ids)),
        tokenizer,
        list(stops),
        None,
        mode,
        True,
    )
    steps = list(unmasking(tokenizer, ids, seed))
    pieces = []
    for call, tokens in enumerate(steps, start=1):
        finished = call == len(steps)
        piece = choice.finish(tokens, call) if finished else choice.progress(tokens, call)
        pieces.append(piece)
        if choice.finish_reason is not None:
            break
    return choice, pieces


@pytest.mark.parametrize("seed", [None, *range(6)])
def test_deltas_of_the_finished_prefix_add_up_to_the_text_and_never_split_a_character(tokenizer, seed):
    ids = tokenizer.encode(TEXT)
    assert len(ids) > len(TEXT)  # multi-byte characters span several tokens
    choice, pieces = follow(tokenizer, TEXT, seed)
    assert "".join(pieces) == TEXT and choice.finish_reason == "length" and choice.nfe == len(ids)
    assert not any("\ufffd" in piece for piece in pieces)
    if seed is None:  # left to right: the text grows as it is decoded
        assert sum(1 for piece in pieces if piece) >= 10


@pytest.mark.parametrize("seed", [None, *range(4)])
def test_a_stop_string_cuts_the_text_before_it_even_when_it_arrives_in_pieces(tokenizer, seed):
    choice, pieces = follow(tokenizer, TEXT, seed, stops=["never", "cat sat"])
    assert "".join(pieces) == TEXT[: TEXT.index("cat sat")] and choice.finish_reason == "stop"
    if seed is None:  # stopped before the whole span was decoded
        assert choice.decoded < len(tokenizer.encode(TEXT))


def test_the_denoising_view_is_the_whole_text_with_masks(tokenizer):
    _, pieces = follow(tokenizer, TEXT, 0, mode=StreamMode.denoising)
    assert "[MASK]" in pieces[0] and pieces[-1] == TEXT


def test_a_remasking_sampler_streams_its_text_only_at_the_end(tokenizer):
    ids = tokenizer.encode(TEXT)
    choice = ChoiceText(
        0,
        0,
        Infill(torch.tensor(ids), torch.ones(len(ids), dtype=torch.bool)),
        slice(0, len(ids)),
        tokenizer,
        [],
        None,
        StreamMode.prefix,
        False,
    )
    assert choice.progress(torch.tensor(ids), 1) is None and choice.finish(torch.tensor(ids), 2) == TEXT


def test_orders_from_a_client_are_names_or_positions_never_paths():
    assert request_order("random") == "random" and request_order([2, 0, 1]) == [2, 0, 1]
    assert request_order([[0, 1], [1, 0]]) == [[0, 1], [1, 0]]
    for bad in ("/etc/passwd", [0.5, 1], [[0], 1], {"a": 1}, [], True):
        with pytest.raises(ConfigError, match="order"):
            request_order(bad)
