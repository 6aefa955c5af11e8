"""The OpenAI completions wire format: the request body, responses, stream chunks and error objects.

Errors travel as `{"error": {"message", "type", "param", "code"}}` with the HTTP status the official
clients map to their exceptions (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError,
413, 429 RateLimitError, 5xx InternalServerError).
"""

from __future__ import annotations

import json
import secrets
import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from radd_cli.validation import shortened, shown

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
MAX_STOPS = 4  # as the OpenAI API
MAX_DEPTH = 16  # nested arrays and objects; the deepest field (an order per choice) needs 3
MAX_INTEGER = 2**64  # no field takes a whole number this large (seeds go up to 2^64 − 1)


class ApiError(Exception):
    """A request that cannot be served as sent: its HTTP status and an OpenAI-style error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        kind = ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """The body of POST /v1/completions. radd's own settings arrive as extra fields (`model_extra`)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str
    prompt: str | list[str]
    suffix: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    # OpenAI fields radd takes only at their neutral values (NEUTRAL)
    echo: bool | None = None
    logprobs: int | None = None
    best_of: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def stops(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)


NEUTRAL = {
    "echo": (None, False),
    "logprobs": (None,),
    "best_of": (None, 1),
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "logit_bias": (None, {}),
}


def parse_request(body: bytes) -> CompletionRequest:
    """The request in `body`, or an ApiError(400) that names every field that is wrong."""
    try:
        data = json.loads(body)
    except RecursionError:  # the parser nests one call per level
        raise ApiError(400, f"the body nests arrays or objects deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON ({shortened(str(error), 200)}); send a JSON object") from None
    except ValueError:  # Python reads no integer of more than 4300 digits
        raise ApiError(400, "the body holds a number with more than 4300 digits; no field takes one") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the body must be a JSON object, got a {type(data).__name__}")
    check_values(data)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        raise ApiError(400, "prompt: token ids are not supported by radd serve; send text", param="prompt")
    try:
        request = CompletionRequest.model_validate(data)
    except ValidationError as error:
        raise _field_errors(error, data) from None
    for name, allowed in NEUTRAL.items():
        if getattr(request, name) not in allowed:
            raise ApiError(400, f"{name} is not supported by radd serve; leave it out", param=name)
    if not request.prompts:
        raise ApiError(400, "prompt is an empty list; give a string or a list of strings", param="prompt")
    if len(request.stops) > MAX_STOPS or "" in request.stops:
        raise ApiError(400, f"stop: give up to {MAX_STOPS} non-empty strings", param="stop")
    return request


def check_values(data: dict) -> None:
    """Refuse, before any field is read, what no field takes: arrays or objects nested past MAX_DEPTH levels,
    and whole numbers of MAX_INTEGER or more (no tensor or generator downstream could hold them)."""
    pending = [(name, value, 1) for name, value in data.items()]
    while pending:
        name, value, depth = pending.pop()
        field = shortened(name)
        if depth > MAX_DEPTH:
            raise ApiError(400, f"{field}: nested deeper than {MAX_DEPTH} levels", param=field)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INTEGER:
            raise ApiError(400, f"{field}: {shown(value)} is out of range (at most 2^64 - 1)", param=field)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((name, child, depth + 1) for child in children)


def _field_errors(error: ValidationError, data: dict) -> ApiError:
    problems: dict[str, list[str]] = {}
    for item in error.errors():
        name = shortened(str(item["loc"][0])) if item["loc"] else "body"
        message = "is required" if item["type"] == "missing" else item["msg"].replace("Input should be", "should be")
        if message not in problems.setdefault(name, []):
            problems[name].append(message)
    described = [
        f"{name} {' or '.join(messages)}" + (f", got {shown(data[name])}" if name in data else "")
        for name, messages in problems.items()
    ]
    return ApiError(400, "; ".join(described), param=next(iter(problems)))


def new_id() -> str:
    return "cmpl-" + secrets.token_hex(12)


def completion(
    request_id: str, model: str, choices: list[dict], usage: dict | None, created: int | None = None
) -> dict:
    """A `text_completion` object: the whole response, or one stream chunk (without usage)."""
    body = {
        "id": request_id,
        "object": "text_completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def choice(index: int, text: str, finish_reason: str | None, **extra) -> dict:
    """One choice; radd adds `seed` and `nfe` (the network calls the sequence cost) when it is finished."""
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason, **extra}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def event(data: dict | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
