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

Other model_args: `device`, `precision`, `seed`.
"""

from __future__ import annotations

import logging

import torch
from lm_eval.api.model import LM

from radd_cli.errors import ConfigError
from radd_cli.evaluation import conditional
from radd_cli.io.inference import load_for_inference
from radd_cli.sampling import SamplingConfig, Strategy, prompting

NAME = "radd"
TARGET = "radd_cli.evaluation.lmeval:RaddLM"  # what the entry point names


def register() -> None:
    """Make `--model radd` known to lm-eval in this process (not needed where lm-eval reads entry points)."""
    from lm_eval.api.registry import model_registry

    if NAME not in model_registry:
        model_registry.register(NAME, target=TARGET)


class RaddLM(LM):
    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        precision: str = "auto",
        batch_size: int | str = 16,
        max_batch_size: int | None = None,
        likelihood: str = "exact",
        mc_samples: int = 64,
        rolling_samples: int = 32,
        method: str = "tweedie",
        steps: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if likelihood not in ("exact", "monte_carlo"):
            raise ValueError(f"likelihood={likelihood!r}: use exact or monte_carlo")
        if device and device.startswith("cuda") and not torch.cuda.is_available():  # lm-eval's default is cuda:0
            logging.getLogger(__name__).warning("--device %s: torch sees no GPU; using the CPU", device)
            device = "cpu"
        self.loaded = load_for_inference(str(pretrained), device or "auto", precision)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto" → a sensible default
        self.likelihood, self.mc_samples, self.rolling_samples = likelihood, int(mc_samples), int(rolling_samples)
        self.method, self.steps, self.seed = method, steps, int(seed)
        SamplingConfig(method=method, steps=steps)  # a bad method or step count fails here, not mid-run

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
        return results

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
            with self.loaded.autocast():
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
