"""From a completion request to started rows, and from rows back to the text of each choice.

Each prompt becomes a prefix/suffix template (`templates.prefix_suffix_template`) of
len(prompt) + max_tokens + len(suffix) tokens, so choice i of a request with `seed` S is exactly what
`radd infill --prefix PROMPT --suffix SUFFIX --length N --seed S+i` gives (choice i of prompt j is
i = j·n + k). radd's own `template` field ("The [MASK:12] sat.") replaces prompt and suffix, and
"[MASK:n]" alone is `radd sample --length n`. The sampling settings start from the server's defaults
(the options `radd serve` was given, those of `radd sample`) and are built into one `SamplingConfig`,
which checks them exactly as the command line does.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from dataclasses import dataclass

import torch

from radd_cli.errors import ConfigError
from radd_cli.io.inference import LoadedModel
from radd_cli.sampling import SAMPLERS, SamplingConfig, Strategy, templates
from radd_cli.sampling.config import SAMPLER_SETTINGS, OrderName
from radd_cli.sampling.engine import resolve_seeds
from radd_cli.sampling.pool import Job, first_generated_eos, make_job
from radd_cli.serve.wire import ApiError, CompletionRequest
from radd_cli.validation import Choice

log = logging.getLogger("radd.serve")


class StreamMode(Choice):
    prefix = "prefix"  # text deltas of the longest finished prefix, the OpenAI way
    denoising = "denoising"  # each choice's whole partially denoised text after every network call


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingConfig) if f.name != "strategy")
FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SamplingConfig)}
# radd's own request fields, beside the OpenAI ones (temperature and top_p are OpenAI's)
RADD_FIELDS = (*CONFIG_FIELDS, "strategy", "top_k", "template", "stream_mode")


@dataclass
class Plan:
    """A request ready for the scheduler: its jobs, one `ChoiceText` per choice, and what it costs."""

    jobs: list[Job]
    choices: list[ChoiceText]
    prompt_tokens: int
    config: SamplingConfig


def plan(request: CompletionRequest, loaded: LoadedModel, defaults: SamplingConfig, max_rows: int) -> Plan:
    """Check every setting of `request` and start its rows (each from its own seed); ApiError(400) if wrong."""
    extras = request.model_extra or {}
    unknown = sorted(set(extras) - set(RADD_FIELDS))
    if unknown:
        raise ApiError(
            400, f"unknown field {unknown[0]!r}; radd's own fields are {', '.join(RADD_FIELDS)}", param=unknown[0]
        )
    try:
        config = sampling_config(defaults, request, extras)
    except ConfigError as error:
        raise config_error(error) from None
    mode = extras.get("stream_mode", StreamMode.prefix)
    if mode not in StreamMode.names():
        raise ApiError(400, f"stream_mode: {mode!r} is not one of {', '.join(StreamMode.names())}", param="stream_mode")
    filled = fill_templates(request, extras, loaded)
    count = len(filled) * request.n
    if count > max_rows:
        raise ApiError(
            400,
            f"{len(filled)} prompt(s) × n={request.n} = {count} sequences; this server takes at most {max_rows} per request",
            param="n",
        )
    base = request.seed if request.seed is not None else secrets.randbelow(2**63 - count)
    try:
        seeds = list(resolve_seeds(range(base, base + count), count, None))
        jobs = [
            start(loaded, config, infill, seeds, range(j * request.n, (j + 1) * request.n))
            for j, (infill, _) in enumerate(filled)
        ]
    except ConfigError as error:
        raise config_error(error, "seed" if str(error).startswith("seeds") else None) from None
    live = not any(job.sampler.remasks for job in jobs)
    eos = loaded.tokenizer.eos_id if config.stop_at_eos else None
    choices = [
        ChoiceText(i, seeds[i], infill, window, loaded.tokenizer, request.stops, eos, StreamMode(mode), live)
        for j, (infill, window) in enumerate(filled)
        for i in range(j * request.n, (j + 1) * request.n)
    ]
    prompt_tokens = sum(infill.length - infill.num_free for infill, _ in filled)
    return Plan(jobs, choices, prompt_tokens, config)


def sampling_config(defaults: SamplingConfig, request: CompletionRequest, extras: dict) -> SamplingConfig:
    """The server's defaults with the request's settings on top, checked by SamplingConfig and Strategy."""
    base = defaults.strategy
    if "strategy" in extras or "top_k" in extras or request.top_p is not None:
        name, top_p, top_k = extras.get("strategy"), request.top_p, extras.get("top_k")
    else:
        name, top_p, top_k = base.name, base.top_p, base.top_k
    temperature = base.temperature if request.temperature is None else request.temperature
    strategy = Strategy.from_options(name, top_p, top_k, temperature)
    settings = {name: extras.get(name, getattr(defaults, name)) for name in CONFIG_FIELDS}
    method = SAMPLERS.get(settings["method"]) if isinstance(settings["method"], str) else None
    if method is not None and "method" in extras:  # the server's settings for another sampler do not carry over
        for name in SAMPLER_SETTINGS.keys() - method.settings - extras.keys():
            settings[name] = FIELD_DEFAULTS[name]
    if "order" in extras:
        settings["order"] = request_order(extras["order"])
    return SamplingConfig(**settings, strategy=strategy)


def request_order(order):
    """An order a client may send: a name, or positions as a list (never a path on the server)."""
    if isinstance(order, str) and order in OrderName.names():
        return order
    rows = order if isinstance(order, list) and order and isinstance(order[0], list) else [order]
    if isinstance(order, list) and all(
        isinstance(row, list) and row and all(type(v) is int for v in row) for row in rows
    ):
        return order
    raise ConfigError(
        f"order: {order!r} is not one of {', '.join(OrderName.names())}, nor positions as a list of whole "
        "numbers (one list per choice for different orders)"
    )


def config_error(error: ConfigError, param: str | None = None) -> ApiError:
    """A settings error as a 400; its `param` is read from the first problem (`field: ...` or `--option ...`)."""
    first = error.problems[0]
    option = first.startswith("--")
    field = first.split()[0].removeprefix("--").replace("-", "_") if option else first.split(":")[0].strip()
    field = {"name": "strategy", "no_cache": "cache"}.get(field, field)
    if param is None and (field in RADD_FIELDS or field in ("temperature", "top_p")):
        param = field
    elif param is None and "order" in first:  # the sampler found the given order of the wrong shape
        param = "order"
    return ApiError(400, str(error).replace("name:", "strategy:"), param=param)


def fill_templates(
    request: CompletionRequest, extras: dict, loaded: LoadedModel
) -> list[tuple[templates.Infill, slice]]:
    """Each prompt's template and the window of positions its choice's text covers."""
    model_length = loaded.model.config.length
    if "template" not in extras:
        return [
            prompt_template(prompt, request.suffix, request.max_tokens, loaded, model_length)
            for prompt in request.prompts
        ]
    text = extras["template"]
    if request.prompts != [""] or request.suffix or request.max_tokens is not None or not isinstance(text, str):
        raise ApiError(
            400,
            "template: give a string, with an empty prompt, no suffix and no max_tokens (the [MASK:n] spans set the "
            "length)",
            param="template",
        )
    try:
        infill = templates.build_template(templates.parse_template(text), loaded.tokenizer)
    except ConfigError as error:
        raise ApiError(400, str(error), param="template") from None
    if infill.length > model_length:
        raise ApiError(
            400,
            f"the template is {infill.length} tokens long but the model holds {model_length}; shorten its text or "
            "its [MASK:n] spans",
            param="template",
            code="context_length_exceeded",
        )
    return [(infill, slice(0, infill.length))]


def prompt_template(prompt: str, suffix: str | None, max_tokens: int | None, loaded: LoadedModel, model_length: int):
    for text, name in ((prompt, "prompt"), (suffix, "suffix")):
        try:
            templates.check_text(text, name)
        except ConfigError as error:
            raise ApiError(400, str(error), param=name) from None
    if not prompt and not suffix:
        raise ApiError(
            400,
            "the prompt is empty and there is no suffix; give text to continue or to fill in around, or radd's "
            'template field ("[MASK:n]" for n tokens of unconditional text)',
            param="prompt",
        )
    head = len(loaded.tokenizer.encode(prompt)) if prompt else 0
    tail = len(loaded.tokenizer.encode(suffix)) if suffix else 0
    room = model_length - head - tail
    if max_tokens is None and room >= 1:
        max_tokens = room  # like `radd infill`: the model's whole length
    if max_tokens is None or max_tokens > room:
        asked = f" + max_tokens ({max_tokens})" if max_tokens is not None else ""
        raise ApiError(
            400,
            f"prompt ({head} tokens){asked} + suffix ({tail} tokens) = {head + (max_tokens or 0) + tail} tokens; the model "
            f"holds {model_length}: "
            + (f"lower max_tokens to at most {room}" if room >= 1 else "shorten the prompt or suffix"),
            param="max_tokens" if max_tokens is not None else "prompt",
            code="context_length_exceeded",
        )
    infill = templates.prefix_suffix_template(prompt, suffix, head + max_tokens + tail, loaded.tokenizer)
    return infill, slice(head, head + max_tokens)


def start(
    loaded: LoadedModel, config: SamplingConfig, infill: templates.Infill, seeds: list[int], choices: range
) -> Job:
    """The job of one template's choices (every random choice drawn from each choice's own seed)."""
    return make_job(
        loaded.model,
        loaded.schedule,
        config,
        length=infill.length,
        seeds=seeds[choices.start : choices.stop],
        template=infill.tokens,
        eos_id=loaded.tokenizer.eos_id,
        key=group_key(config, infill.length),
        owner=choices,
    )


def group_key(config: SamplingConfig, length: int):
    """Jobs with equal keys share one sampler in the batch; jobs with their own orders share with no one."""
    try:
        return (length, config, str(config.order)) if isinstance(config.order, str) else object()
    except TypeError:  # a setting that cannot be hashed
        return object()


class ChoiceText:
    """One choice's text as its tokens are decoded: deltas of the finished prefix, stop strings, the end.

    Once a position is unmasked it never changes (for samplers without remasking), so the text of the
    longest prefix with no mask left is final, except for its last characters: an incomplete UTF-8
    character (U+FFFD) or trailing spaces a tokenizer may still merge, and a possible start of a stop
    string, are held back until more is decoded.
    """

    def __init__(self, index, seed, infill, window: slice, tokenizer, stops, eos_id, mode: StreamMode, live: bool):
        self.index, self.seed, self.tokenizer, self.eos_id = index, seed, tokenizer, eos_id
        self.ids_free = infill.free[window]  # (W,) bool
        self.window, self.stops, self.mode, self.live = window, stops, mode, live
        self.hold = max((len(stop) for stop in stops), default=1) - 1
        self.sent = ""  # the text given so far (prefix mode)
        self.eos_found = False  # stop_at_eos: the text ended at a generated end-of-text token
        self.finish_reason: str | None = None
        self.nfe, self.decoded = 0, 0

    def text(self, tokens: torch.Tensor, upto: int | None = None) -> str:
        """The choice's text, up to position `upto` of its window; with stop_at_eos, up to its first generated EOS."""
        ids, free = tokens[self.window][:upto], self.ids_free[:upto]
        if self.eos_id is not None:
            end = int(first_generated_eos(ids[None], free[None], self.eos_id)[0])
            self.eos_found = end < len(ids)
            ids, free = ids[:end], free[:end]
        return "".join(piece for piece, _ in templates.render_spans(ids, free, self.tokenizer))

    def progress(self, tokens: torch.Tensor, nfe: int) -> str | None:
        """After a network call: the new text (a delta; the whole text in denoising mode), or None."""
        self._count(tokens, nfe)
        if self.mode == StreamMode.denoising:
            return self.text(tokens)
        if not self.live:
            return None
        masked = (tokens[self.window] == self.tokenizer.mask_id).nonzero()
        upto = int(masked[0]) if len(masked) else None
        return self._advance(self.text(tokens, upto).rstrip("\ufffd").rstrip(), final=False)

    def finish(self, tokens: torch.Tensor, nfe: int) -> str:
        """The row is done: the rest of the text (the whole text in denoising mode), cut at a stop string."""
        self._count(tokens, nfe)
        if self.mode == StreamMode.denoising:
            self.sent = ""
        return self._advance(self.text(tokens), final=True)

    def _count(self, tokens: torch.Tensor, nfe: int) -> None:
        self.nfe = int(nfe)
        self.decoded = int((self.ids_free & (tokens[self.window] != self.tokenizer.mask_id)).sum())

    def _advance(self, candidate: str, final: bool) -> str:
        cuts = [at for at in (candidate.find(stop) for stop in self.stops) if at >= 0]
        if cuts or self.eos_found:
            candidate, self.finish_reason = candidate[: min(cuts, default=len(candidate))], "stop"
        elif final:
            self.finish_reason = "length"
        else:
            candidate = candidate[: len(candidate) - self.hold]
        if len(candidate) <= len(self.sent):
            return ""
        if not candidate.startswith(self.sent):
            log.warning("choice %d: the decoded text changed under what was streamed", self.index)
        delta, self.sent = candidate[len(self.sent) :], candidate
        return delta
