"""radd as an lm-evaluation-harness model (`pip install 'radd[lmeval]'`; docs/fine-tuning.md).

    lm_eval --model radd --model_args pretrained=runs/sort/final --tasks TASK --batch_size 64

radd declares the model in the `lm_eval.models` entry-point group, which lm-eval releases with plugin
discovery read on their own. With a release that does not (0.4.13 and older), run lm-eval's own command
line through `python -m radd_cli.lmeval` (the same arguments), call `register()` before
`lm_eval.simple_evaluate(model="radd", ...)`, or use radd's own command, `radd harness` (`run` below).

- `loglikelihood`: log p(continuation | context), exact by the any-order autoregressive factorisation
  (one network call per continuation token, requests batched; `likelihood=monte_carlo` averages
  `mc_samples` λ-DCE draws instead: unbiased, cheaper for long continuations);
- `loglikelihood_rolling`: the zero-shot bound (λ-DCE, `rolling_samples` draws) over windows that each
  score new tokens with as much context before them as fits;
- `generate_until`: the prompt as fixed tokens, the response from any sampler (`method`, `steps`, and
  greedy unless the task asks to sample), trimmed at EOS and at the first stop string.

Other model_args: `device`, `precision`, `seed`. They are checked like the command line's options before
the model is loaded (`HarnessSettings`): a missing `pretrained`, an unknown key, a value out of range or a
`device` / `batch_size` given two ways that disagree is one ConfigError. `python -m radd_cli.lmeval`
prints it as one line and exits with 2 (lm-eval's own `lm_eval` shows the traceback above that line). A
log-likelihood that comes out NaN or infinite is an error, never a score.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field, fields

import torch
from lm_eval.api.model import LM

from radd_cli.device import Precision, Work
from radd_cli.errors import ConfigError, NonFiniteError, RaddError
from radd_cli.evaluation import conditional
from radd_cli.evaluation.conditional import Likelihood
from radd_cli.io.inference import load_for_inference
from radd_cli.sampling import MAX_STEPS, Method, SamplingConfig, Strategy, prompting
from radd_cli.validation import limits, shown, validate

NAME = "radd"
TARGET = "radd_cli.evaluation.lmeval:RaddLM"  # what the entry point names


def register() -> None:
    """Make `--model radd` known to lm-eval in this process (not needed where lm-eval reads entry points)."""
    from lm_eval.api.registry import model_registry

    if NAME not in model_registry:
        model_registry.register(NAME, target=TARGET)




AUTO_BATCH_SIZE = 16  # what `batch_size=auto` (or auto:N) gives: radd does not search for the largest
HARNESS_DEFAULTS = {"batch_size": 1, "device": "cuda:0"}  # what lm-eval passes when its options are left out


@dataclass(frozen=True)
class HarnessSettings:
    """The adapter's model_args, checked before anything is loaded (the field names are the keys)."""

    pretrained: str
    device: str | None = None
    precision: Precision = Precision.auto
    batch_size: int = field(default=AUTO_BATCH_SIZE, metadata=limits(low=1))
    max_batch_size: int | None = field(default=None, metadata=limits(low=1))  # lm-eval's; radd does not search
    likelihood: Likelihood = Likelihood.exact
    mc_samples: int = field(default=64, metadata=limits(low=1))
    rolling_samples: int = field(default=32, metadata=limits(low=1))
    method: Method = Method.tweedie
    steps: int | None = field(default=None, metadata=limits(low=1, high=MAX_STEPS))
    seed: int = field(default=0, metadata=limits(low=0, high=2**63 - 1))

    def __post_init__(self) -> None:
        validate(self)
        SamplingConfig(method=self.method, steps=self.steps)  # a step count the method does not take

    @classmethod
    def from_args(cls, args: dict) -> HarnessSettings:
        """Settings from model_args as lm-eval parses them (`batch_size=auto` and digit strings included)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise ConfigError(f"model_args: unknown key {shown(unknown[0])}; radd takes {', '.join(known)}")
        if args.get("pretrained") in (None, ""):
            raise ConfigError("model_args: pretrained is missing; give the model, e.g. pretrained=runs/NAME/final")
        values = dict(args)
        batch = values.get("batch_size")
        if isinstance(batch, str) and (batch == "auto" or batch.startswith("auto:")):
            values["batch_size"] = AUTO_BATCH_SIZE
        elif isinstance(batch, str) and batch.strip().isdigit():
            values["batch_size"] = int(batch)
        if isinstance(values["pretrained"], (int, float)) and not isinstance(values["pretrained"], bool):
            values["pretrained"] = str(args["pretrained"])  # a folder named by digits, as lm-eval parsed it
        return cls(**values)


def merged_args(model_args: dict, harness: dict | None) -> dict:
    """model_args with lm-eval's own options (--device, --batch_size) added; the two disagreeing is an error,
    except where lm-eval only passes its default."""
    merged = dict(model_args)
    for name, value in (harness or {}).items():
        if value is None:
            continue
        if name in merged and merged[name] != value and str(merged[name]) != str(value):
            if HARNESS_DEFAULTS.get(name) == value:
                continue  # lm-eval's default, not the user's choice: model_args decides
            raise ConfigError(
                f"{name} is given twice: {name}={shown(merged[name])} in model_args and {shown(value)} as lm-eval's "
                f"{name} option; give it once"
            )
        merged[name] = value
    return merged


class RaddLM(LM):
    def __init__(self, pretrained: str | None = None, **model_args):
        """The model_args as keywords (HarnessSettings lists them); checked before the model is loaded."""
        super().__init__()
        settings = HarnessSettings.from_args({"pretrained": pretrained, **model_args})
        device = settings.device
        if device and device.startswith("cuda") and not torch.cuda.is_available():  # lm-eval's default is cuda:0
            logging.getLogger(__name__).warning("device=%s: torch sees no GPU; using the CPU", device)
            device = "cpu"
        self.settings = settings
        self.loaded = load_for_inference(settings.pretrained, device or "auto", settings.precision, Work.eval)
        self.batch_size = settings.batch_size
        self.likelihood, self.mc_samples = settings.likelihood, settings.mc_samples
        self.rolling_samples = settings.rolling_samples
        self.method, self.steps, self.seed = settings.method, settings.steps, settings.seed

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> RaddLM:
        from lm_eval.utils import simple_parse_args_string

        return cls(**merged_args(simple_parse_args_string(arg_string), additional_config))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> RaddLM:
        return cls(**merged_args(arg_dict, additional_config))

    @property
    def length(self) -> int:
        return self.loaded.model.config.length

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def _pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Tokens of context and continuation, split as lm-eval's own models do: trailing spaces of the
        context move to the continuation, and the pair is tokenized whole (an empty context is EOS)."""
        spaces = len(context) - len(context.rstrip())
        context, continuation = context[: len(context) - spaces], context[len(context) - spaces :] + continuation
        whole = self.tokenizer.encode(context + continuation)
        head = self.tokenizer.encode(context)
        if not context:
            return [self.tokenizer.eos_id], whole
        return head, whole[len(head) :]

    def _score(self, pairs: list[tuple[list[int], list[int]]], draws: int | None) -> list[tuple[float, bool]]:
        """log p(continuation | context) of each pair (exact, or the mean of `draws` λ-DCE draws)."""
        results = [(0.0, True)] * len(pairs)  # an empty continuation has probability 1
        device, mask_id = self.loaded.device, self.tokenizer.mask_id
        scored = [i for i, (_, continuation) in enumerate(pairs) if continuation]
        for batch in conditional.batches(len(scored), self.batch_size):
            rows = [scored[i] for i in batch]
            laid = [conditional.layout(*pairs[i], self.length, mask_id) for i in rows]
            tokens = torch.stack([t for t, _ in laid]).to(device)
            given = torch.stack([g for _, g in laid]).to(device)
            with self.loaded.autocast():
                if draws is None:
                    log_p, greedy = conditional.exact(self.loaded.model, tokens, given)
                else:
                    log_p = conditional.monte_carlo(
                        self.loaded.model, self.loaded.schedule, tokens, given, draws, self.seed
                    )
                    greedy = torch.zeros(len(rows), dtype=torch.bool)  # not known without the exact path
            for row, value, flag in zip(rows, log_p.cpu(), greedy.cpu()):
                results[row] = (float(value), bool(flag))
        return check_finite(results, pairs)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [self._pair(*request.args) for request in requests]
        pairs = [(context, continuation[-(self.length - 1) :]) for context, continuation in pairs]
        return self._score(pairs, None if self.likelihood == "exact" else self.mc_samples)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for index, request in enumerate(requests):
            for pair in conditional.rolling_windows(
                self.tokenizer.encode(request.args[0]), self.length, self.tokenizer.eos_id
            ):
                windows.append(pair)
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, (log_p, _) in zip(owner, self._score(windows, self.rolling_samples)):
            totals[index] += log_p
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests with the same settings are answered together, each at the model's length; a response
        is cut at EOS, then to max_gen_toks tokens, then at the first stop string."""
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(self._generation_settings(request.args[1]), []).append(index)
        answers = [""] * len(requests)
        for (stop, room, temperature), members in groups.items():
            strategy = Strategy("top_k", top_k=1) if temperature is None else Strategy(temperature=temperature)
            config = SamplingConfig(method=self.method, steps=self.steps, strategy=strategy)
            contexts = [requests[i].args[0] for i in members]
            # each context keeps as many of its last tokens as leave a free position; max_gen_toks only trims
            ids = [self.tokenizer.encode(c)[1 - self.length :] if c else [self.tokenizer.eos_id] for c in contexts]
            responses = prompting.respond(
                self.loaded.model,
                self.loaded.schedule,
                self.tokenizer,
                config,
                contexts,
                prompt_ids=ids,
                length=self.length,
                seed=self.seed + members[0],
                batch_size=self.batch_size,
                device=self.loaded.device,
                precision=self.loaded.precision,
            )
            for index, response in zip(members, responses):
                answers[index], _ = prompting.trim_at_stop(self.tokenizer.decode(response.token_ids[:room]), stop)
        return answers

    def _generation_settings(self, settings) -> tuple[tuple[str, ...], int, float | None]:
        """(stop strings, most new tokens, temperature or None for greedy) of a request's gen_kwargs."""
        settings = dict(settings or {})
        stop = settings.get("until") or []
        stop = (stop,) if isinstance(stop, str) else tuple(stop)
        room = max(1, min(int(settings.get("max_gen_toks", self.length)), self.length - 1))
        temperature = float(settings.get("temperature", 0.0) or 0.0)
        sampled = bool(settings.get("do_sample")) or temperature > 0
        return stop, room, (temperature or 1.0) if sampled else None


def check_finite(results: list[tuple[float, bool]], pairs: list) -> list[tuple[float, bool]]:
    """The scores, or a NonFiniteError: a NaN would make lm-eval's argmax pick a choice and report a score."""
    for index, (value, _) in enumerate(results):
        if not math.isfinite(value):
            raise NonFiniteError(
                f"the log-likelihood of request {index} ({len(pairs[index][1])} continuation tokens) is {value}; "
                "the model's outputs or the Monte-Carlo setting are broken, so no score is reported"
            )
    return results


def main() -> None:
    """lm-eval's command line with `--model radd` registered; radd's errors are one line and their exit code
    (RADD_DEBUG=1 shows the traceback)."""
    register()
    from lm_eval.__main__ import cli_evaluate

    try:
        cli_evaluate()
    except RaddError as error:
        if os.environ.get("RADD_DEBUG"):
            raise
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def run(
    lm: RaddLM, tasks: list[str], *, num_fewshot: int | None = None, limit: float | None = None, include_path=()
) -> dict:
    """lm-evaluation-harness's `simple_evaluate` on `lm`: the dict it returns (`results`, `configs`, `versions`,
    `n-shot`, ...), with lm-eval's own seeds."""
    from lm_eval import simple_evaluate

    manager = task_manager(tasks, list(include_path))
    return simple_evaluate(
        model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit, task_manager=manager, log_samples=False
    )


def task_manager(tasks: list[str], include_path: list[str]):
    """lm-eval's task index: the local task YAMLs alone when they hold every task asked for (indexing lm-eval's
    own 14,000 takes half a minute), else lm-eval's and the local ones. Unknown tasks are a ConfigError."""
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(task in local.all_tasks for task in tasks):
            return local
    manager = TaskManager(include_path=include_path or None)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        where = f" nor in {', '.join(include_path)}" if include_path else ""
        raise ConfigError(
            f"tasks: {', '.join(unknown)} is not an lm-eval task{where} (`lm_eval ls tasks` lists them; "
            "include_path adds folders of task YAMLs)"
        )
    return manager
