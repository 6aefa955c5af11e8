"""The model a benchmark times: a checkpoint, or random weights of a named size."""

from __future__ import annotations

from radd_cli.bench import timing as benchmark
from radd_cli.bench.timing import Size
from radd_cli.core.model import RADD
from radd_cli.core.schedule import get_schedule
from radd_cli.device import Work, pick_device, resolve_precision
from radd_cli.errors import ConfigError
from radd_cli.io.inference import load_for_inference


def bench_model(model: str | None, size: Size, length: int | None, device: str, precision: str, work: Work):
    """(model, schedule, device, precision, label, length) from a checkpoint or a named size."""
    if model is not None:
        loaded = load_for_inference(model, device, precision, work)
        length = length or loaded.model.config.length
        if length > loaded.model.config.length:
            raise ConfigError(f"{length} is longer than the model's length {loaded.model.config.length}", field="length")
        return loaded.model, loaded.schedule, loaded.device, loaded.precision, model, length
    target = pick_device(device)
    resolved = resolve_precision(precision, target.type, work=work)
    built = RADD(benchmark.size_config(size, length=length)).to(target).eval()
    return built, get_schedule("loglinear"), target, resolved, f"{size} (random weights)", built.config.length
