"""Reading prompts for `radd sample --prompt/--prompts`: both at once, .jsonl and .txt, and each bad file named."""

from __future__ import annotations

import pytest

from radd_cli.commands.prompt_io import read_prompts
from radd_cli.errors import DataError


def test_prompts_come_from_the_options_then_the_file(tmp_path):
    rows = tmp_path / "p.jsonl"
    rows.write_text('{"prompt": "sort: 3 1 ="}\n\n{"prompt": "add: 1 2 ="}\n')
    lines = tmp_path / "p.txt"
    lines.write_text("first\n\nsecond\n")
    assert read_prompts(["given"], rows) == ["given", "sort: 3 1 =", "add: 1 2 ="]
    assert read_prompts(None, lines) == ["first", "second"]
    assert read_prompts(None, None) == []


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("p.csv", "a,b", "give a .jsonl file"),
        ("p.jsonl", "not json\n", "line 1 is not JSON"),
        ("p.jsonl", '{"text": "x"}\n', 'line 1 has no "prompt" string'),
        ("p.jsonl", "\n\n", "holds no prompts"),
        ("p.txt", None, "no such file"),
    ],
)
def test_bad_prompt_files_are_named_with_what_to_fix(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_prompts(None, path)
