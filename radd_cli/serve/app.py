"""The HTTP side of `radd serve`: OpenAI-compatible routes on FastAPI, run by uvicorn.

    POST /v1/completions   prompt (+ suffix) → text; n, seed, stop, stream; radd's settings as extra fields
    GET  /v1/models        the one model this server holds
    GET  /health           answers while the network runs (the scheduler has its own thread)
    GET  /metrics          Prometheus text: requests, queue depth, rows in flight, network calls, tokens/s

Requests are checked on the event loop (and in a worker thread, where their rows are started); only the
scheduler thread calls the network. docs/serving.md describes the whole protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import time
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from radd_cli.errors import RaddError
from radd_cli.io.inference import LoadedModel
from radd_cli.sampling import SamplingConfig
from radd_cli.serve import wire
from radd_cli.serve.completions import Plan, plan
from radd_cli.serve.metrics import Metrics
from radd_cli.serve.scheduler import Failure, Scheduler, Ticket
from radd_cli.serve.wire import ApiError
from radd_cli.validation import limits, validate

RETRY_AFTER_SECONDS = 1
CLIENT_GONE = 499  # the status nginx logs for a client that closed the connection first


@dataclass(frozen=True)
class ServeSettings:
    """What a server holds to: its model's name, its limits, its key and the default sampling settings."""

    name: str
    max_batch_size: int = field(default=64, metadata=limits(low=1))  # sequences in flight, over all requests
    max_queue: int = field(default=256, metadata=limits(low=1))  # requests waiting to join the batch
    max_request_bytes: int = field(default=1 << 20, metadata=limits(low=1))
    shutdown_timeout: float = field(default=30.0, metadata=limits(low=0))  # seconds requests get to finish
    api_key: str | None = field(default=None, repr=False)
    defaults: SamplingConfig = SamplingConfig()

    def __post_init__(self) -> None:
        validate(self)


def create_app(loaded: LoadedModel, settings: ServeSettings) -> FastAPI:
    """The FastAPI app serving `loaded`; its scheduler thread runs while the app's lifespan does."""
    metrics = Metrics()
    scheduler = Scheduler(
        loaded.model,
        max_rows=settings.max_batch_size,
        max_queue=settings.max_queue,
        metrics=metrics,
        autocast=loaded.autocast,
        device=loaded.device,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(title="radd serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.scheduler, app.state.metrics, app.state.settings = scheduler, metrics, settings
    created = int(time.time())
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_middleware(CountRequests, metrics=metrics)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.name, "queue_depth": scheduler.queue_depth}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_key(request, settings.api_key)
        return {"object": "list", "data": [model_card(settings.name, created, loaded)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request) -> dict:
        check_key(request, settings.api_key)
        check_model(name, settings.name)
        return model_card(settings.name, created, loaded)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        check_key(request, settings.api_key)
        parsed = wire.parse_request(await read_body(request, settings.max_request_bytes))
        check_model(parsed.model, settings.name)
        if scheduler.queue_depth >= settings.max_queue:  # refuse before any work; submit() checks again
            raise queue_full(settings.max_queue)
        prepared = await asyncio.to_thread(plan, parsed, loaded, settings.defaults, settings.max_batch_size)
        ticket = Ticket(prepared.jobs, progress=parsed.stream or bool(parsed.stops))
        if scheduler.stopping:
            raise ApiError(503, "the server is shutting down; retry against another server")
        if not scheduler.submit(ticket):
            raise queue_full(settings.max_queue)
        reply = Reply(wire.new_id(), settings.name, prepared, ticket, scheduler)
        if parsed.stream:
            usage = parsed.stream_options is not None and parsed.stream_options.include_usage
            return StreamingResponse(
                reply.events(usage), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        body = await reply.whole(request)
        return JSONResponse(body) if body is not None else Response(status_code=CLIENT_GONE)

    return app


def model_card(name: str, created: int, loaded: LoadedModel) -> dict:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "radd",
        "max_model_len": loaded.model.config.length,
    }


async def api_error(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    """Starlette's own errors (no such route, wrong method) as OpenAI error objects."""
    message = f"{error.detail}: {request.method} {request.url.path}"
    return await api_error(request, ApiError(error.status_code, message, headers=error.headers))


def queue_full(size: int) -> ApiError:
    return ApiError(
        429,
        f"the queue is full ({size} requests waiting); retry in a moment",
        code="queue_full",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(
            401,
            "missing or wrong API key; send the server's key as `Authorization: Bearer KEY` (the openai client's api_key)",
            code="invalid_api_key",
        )


def check_model(name: str, served: str) -> None:
    if name != served:
        raise ApiError(
            404,
            f"model {name!r} is not served here; this server serves {served!r}",
            param="model",
            code="model_not_found",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it is known to be over `limit` bytes."""
    too_large = ApiError(413, f"the request body is over {limit} bytes, this server's limit", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class Reply:
    """Turns a ticket's updates into one response, or into server-sent events."""

    def __init__(self, request_id: str, model: str, prepared: Plan, ticket: Ticket, scheduler: Scheduler):
        self.id, self.model, self.plan, self.ticket, self.scheduler = request_id, model, prepared, ticket, scheduler
        self.created = int(time.time())

    async def follow(self):
        """(choice, new text) as the rows advance; ends once every choice has finished."""
        pending = set(range(len(self.plan.choices)))
        while pending:
            update = await self.ticket.updates.get()
            if isinstance(update, Failure):
                raise ApiError(update.status, update.message)
            for index, tokens, nfe in zip(update.choices, update.tokens, update.nfe):
                if index not in pending:
                    continue  # stopped early; its rows leave at the next turn
                choice = self.plan.choices[index]
                text = choice.finish(tokens, nfe) if update.finished else choice.progress(tokens, nfe)
                if choice.finish_reason is not None:
                    pending.discard(index)
                    if not update.finished:
                        self.scheduler.cancel(self.ticket, frozenset({index}))
                if text or (text is not None and choice.finish_reason is not None):
                    yield choice, text

    async def whole(self, request: Request) -> dict | None:
        """The complete response; the rows are cancelled if the client goes away first."""

        async def run() -> None:
            async for _ in self.follow():
                pass

        finished, gone = asyncio.ensure_future(run()), asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({finished, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not finished.done():
                finished.cancel()
                self.scheduler.cancel(self.ticket)
        if not finished.done() or finished.cancelled():
            return None  # the client has gone
        finished.result()  # raises the scheduler's failure, if any
        choices = [wire.choice(c.index, c.sent, c.finish_reason, seed=c.seed, nfe=c.nfe) for c in self.plan.choices]
        return wire.completion(self.id, self.model, choices, self.usage(), self.created)

    async def events(self, include_usage: bool):
        """Server-sent events: a chunk per new text, each choice's last with its finish_reason, then [DONE]."""
        done = False
        try:
            async for choice, text in self.follow():
                extra = {"seed": choice.seed, "nfe": choice.nfe} if choice.finish_reason else {}
                item = wire.choice(choice.index, text, choice.finish_reason, **extra)
                yield wire.event(wire.completion(self.id, self.model, [item], None, self.created))
            done = True
            if include_usage:
                yield wire.event(wire.completion(self.id, self.model, [], self.usage(), self.created))
        except ApiError as error:
            done = True  # the scheduler has removed the rows already
            yield wire.event(error.body())
        finally:
            if not done:  # the client went away (the response was cancelled)
                self.scheduler.cancel(self.ticket)
        yield wire.event("[DONE]")

    def usage(self) -> dict:
        return wire.usage(self.plan.prompt_tokens, sum(choice.decoded for choice in self.plan.choices))


async def disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class CountRequests:
    """ASGI middleware: count every HTTP response by route and status, and time the completions."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            self.metrics.requests.labels(path=path, code=str(status[0])).inc()
            if path == "/v1/completions":
                self.metrics.latency.observe(time.perf_counter() - started)


KNOWN_PATHS = ("/v1/completions", "/v1/models", "/health", "/metrics")


def listen(host: str, port: int) -> socket.socket:
    """A bound socket (port 0: any free one), or a RaddError that says why not."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
    except OSError as error:
        raise RaddError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); choose another --host or --port"
        ) from None
    return sock


def run(app: FastAPI, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serve until SIGINT or SIGTERM, then stop taking connections and let the requests in flight finish:
    those still running after the settings' `shutdown_timeout` get a 503."""
    grace = app.state.settings.shutdown_timeout
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=grace + 10, lifespan="on")
    Server(config, app.state.scheduler, grace).run(sockets=[sock])


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, scheduler: Scheduler, grace: float):
        super().__init__(config)
        self.scheduler, self.grace = scheduler, grace

    async def shutdown(self, sockets=None) -> None:
        asyncio.get_running_loop().call_later(self.grace, self.scheduler.stop, False)
        await super().shutdown(sockets)
