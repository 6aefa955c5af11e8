"""What `radd sample --prompt/--prompts` adds to sampling: reading the prompts, drawing a response to each
(docs/fine-tuning.md), and showing prompt and response apart."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from radd_cli.commands import sampling_io
from radd_cli.errors import DataError
from radd_cli.io.inference import LoadedModel
from radd_cli.sampling import SamplingConfig, check_results_fit, prompting
from radd_cli.sampling.templates import check_text


def read_prompts(prompts: list[str] | None, prompts_file: Path | None) -> list[str]:
    """The --prompt texts, then the rows of --prompts FILE; checked before any model is loaded."""
    texts = list(prompts or [])
    for text in texts:
        check_text(text, "prompt")
    if prompts_file is not None:
        texts += read_prompt_file(prompts_file)
    return texts


def read_prompt_file(path: Path) -> list[str]:
    """Prompts from a .jsonl file ({"prompt": ...} per row) or a .txt file (one prompt per line)."""
    if path.suffix not in (".jsonl", ".txt"):
        raise DataError(f'--prompts {path}: give a .jsonl file ({{"prompt": ...}} per line) or a .txt file')
    if not path.exists():
        raise DataError(f"--prompts {path}: no such file")
    if not path.is_file():
        raise DataError(f"--prompts {path} is not a regular file; give a .jsonl or .txt file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # without a byte-order mark
    except UnicodeDecodeError as error:
        raise DataError(f"--prompts {path} is not UTF-8 text (byte {error.start})") from None
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            prompts.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f'{path} line {number} is not JSON ({error.msg}); give one {{"prompt": ...}} per line'
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise DataError(f'{path} line {number} has no "prompt" string; give one {{"prompt": ...}} per line')
        prompts.append(row["prompt"])
    if not prompts:
        raise DataError(f"--prompts {path} holds no prompts; it is empty")
    return prompts


def answer(
    loaded: LoadedModel,
    config: SamplingConfig,
    draw: sampling_io.DrawOptions,
    prompts: list[str],
    length: int,
    chat: bool,
) -> None:
    """--num-samples responses to each prompt, printed (response highlighted) and written to --output."""
    tokenizer = loaded.tokenizer
    prompt_ids = [prompting.encode_prompt(prompt, tokenizer, chat) for prompt in prompts]
    check_results_fit(len(prompts) * draw.num_samples, length, sampling_io.BYTES_PER_PRINTED_TOKEN)
    window = loaded.model.config.length
    templates = prompting.prompt_templates(prompt_ids, length, tokenizer.mask_id, draw.num_samples, window)
    request = sampling_io.Request(len(templates), draw.batch_size, length, draw.seed)
    config = replace(config, stop_at_eos=True)  # an answer ends at its first EOS
    result, seconds = sampling_io.draw(loaded, config, request, template=templates)
    responses = prompting.read_responses(result, prompts, prompt_ids, tokenizer, request.seeds)
    shown = [tokenizer.decode(response.prompt_ids) for response in responses]  # the fixed tokens, as read
    extra = [
        {
            "prompt": response.prompt,
            "response": response.text,
            "finish_reason": response.finish_reason,
            "text": text + response.text,
            "token_ids": response.prompt_ids + response.token_ids,
        }
        for text, response in zip(shown, responses)
    ]
    free = sum(length - len(ids) for ids in prompt_ids) // len(prompt_ids)
    pieces = [[(text, False), (response.text, True)] for text, response in zip(shown, responses)]
    sampling_io.report(
        loaded,
        config,
        request,
        result,
        seconds,
        draw.model,
        draw.output,
        free_positions=free,
        pieces=pieces,
        extra=extra,
    )
