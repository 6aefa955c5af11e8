"""`radd serve --model M`: an OpenAI-compatible completions server with continuous batching (docs/serving.md)."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Annotated, Optional

import typer

from radd_cli.commands.loading import load_model
from radd_cli.commands.options import CompileOption, DeviceOption, ModelOption, PrecisionOption, setting_options
from radd_cli.commands.sampling_io import sampling_command
from radd_cli.console import err, out
from radd_cli.device import Precision, Work
from radd_cli.errors import RaddError
from radd_cli.sampling import SamplingConfig
from radd_cli.serve.settings import LIMITS, ServeSettings
from radd_cli.validation import Choice

API_KEY_VARIABLE = "RADD_API_KEY"


class LogLevel(Choice):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@sampling_command(setting_options(ServeSettings, only=LIMITS), into="limits")
def serve(
    config: SamplingConfig,
    limits: dict,
    model: ModelOption,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one).")] = 8000,
    api_key: Annotated[
        Optional[str],
        typer.Option("--api-key", envvar=API_KEY_VARIABLE, help="Require `Authorization: Bearer KEY` on /v1 routes."),
    ] = None,
    name: Annotated[
        Optional[str], typer.Option("--name", help="The model name clients send (default: the --model value).")
    ] = None,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="uvicorn's log level.")] = LogLevel.info,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    compile: CompileOption = False,
) -> None:
    """Serve a model over HTTP in the OpenAI completions format (the sampling options are the defaults)."""
    require_serve_extra()
    from radd_cli.serve.app import create_app, listen, run

    if api_key is None and API_KEY_VARIABLE in os.environ:  # Click reads an empty variable as none: not here
        api_key = os.environ[API_KEY_VARIABLE]
    settings = ServeSettings(name=name if name is not None else model, api_key=api_key, defaults=config, **limits)
    sock = listen(host, port)
    loaded = load_model(model, device, precision, Work.serve, compile)
    loaded.warm_up(loaded.model.config.length)  # with --compile, compile before the first request
    app = create_app(loaded, settings)
    address = sock.getsockname()
    out.print(f"radd serve: http://{host}:{address[1]}/v1 serving {settings.name!r}", markup=False, highlight=False)
    err.print(f"{loaded.device} ({loaded.precision}); Ctrl-C or SIGTERM stops, letting requests in flight finish")
    with stop_signals_quietly():
        run(app, sock, log_level=str(log_level))
    err.print("radd serve: stopped")


def require_serve_extra() -> None:
    """A one-line error naming the extra when FastAPI, uvicorn or prometheus_client is missing."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise RaddError(f"radd serve needs {error.name or 'its extra'}: pip install 'radd[serve]'") from None


@contextlib.contextmanager
def stop_signals_quietly():
    """uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again: let that end here."""
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
