"""A model's exact-match accuracy on a built-in task (`radd eval --task NAME`, docs/fine-tuning.md): it answers
each held-out prompt, and the share of answers equal to the reference (up to whitespace) is reported with its
standard error and 95% interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from radd_cli.data.tasks import examples
from radd_cli.device import Work, resolve_precision
from radd_cli.sampling.engine import model_device
from radd_cli.sampling.prompting import respond


def exact_match(response: str, reference: str) -> bool:
    """Whether a response is the reference, up to whitespace."""
    return response.split() == reference.split()


@dataclass(frozen=True)
class ExactMatchReport:
    task: str
    split: str
    prompts: int
    correct: int
    examples: tuple[tuple[str, str, str], ...]  # (prompt, response, reference) of the first few

    @property
    def accuracy(self) -> float:
        return self.correct / self.prompts

    @property
    def standard_error(self) -> float:
        """Of the accuracy, as a binomial proportion."""
        return math.sqrt(self.accuracy * (1 - self.accuracy) / self.prompts)

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson score interval of the accuracy: sound at 0% and 100%, where ± 1.96 SE is not."""
        z, n, p = 1.959964, self.prompts, self.accuracy
        centre, scale = p + z * z / (2 * n), 1 + z * z / n
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return max(0.0, (centre - half) / scale), min(1.0, (centre + half) / scale)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "split": self.split,
            "prompts": self.prompts,
            "correct": self.correct,
            "exact_match": self.accuracy,
            "standard_error": self.standard_error,
            "interval": self.interval,
            "examples": [{"prompt": p, "response": r, "reference": ref} for p, r, ref in self.examples],
        }


def score(name: str, split: str, responses: list[str], shown: int = 5) -> ExactMatchReport:
    """Exact match of `responses` against the first len(responses) rows of the split."""
    rows = examples(name, split)[: len(responses)]
    correct = sum(exact_match(response, row.response) for response, row in zip(responses, rows))
    shown_rows = tuple((row.prompt, response, row.response) for response, row in list(zip(responses, rows))[:shown])
    return ExactMatchReport(name, split, len(rows), correct, shown_rows)


def evaluate_task(
    model,
    schedule,
    tokenizer,
    name: str,
    config,
    *,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    device=None,
    progress=None,
    precision: str = "auto",
) -> ExactMatchReport:
    """Answer the split's first `limit` prompts (all by default) with `config` and score them by exact match,
    in `precision` (`auto`: what `radd eval --task` picks on this device)."""
    rows = examples(name, split)[:limit]
    where = torch.device(device) if device is not None else model_device(model)
    responses = respond(
        model,
        schedule,
        tokenizer,
        config,
        [row.prompt for row in rows],
        length=model.config.length,
        seed=seed,
        batch_size=batch_size,
        device=device,
        progress=progress,
        precision=resolve_precision(precision, where.type, work=Work.eval),
    )
    return score(name, split, [response.text for response in responses])
