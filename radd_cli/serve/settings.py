"""What a server holds to, declared once: its limits (the options of `radd serve` are made from these fields),
its key and the default sampling settings. Importable without the serve extra."""

from __future__ import annotations

from dataclasses import dataclass, field

from radd_cli.errors import ConfigError, setting
from radd_cli.sampling import SamplingConfig
from radd_cli.validation import limits, validate

LIMITS = ("max_batch_size", "max_queue", "max_request_bytes", "shutdown_timeout")  # the options radd serve makes


@dataclass(frozen=True)
class ServeSettings:
    """What a server holds to: its model's name, its limits, its key and the default sampling settings."""

    name: str
    max_batch_size: int = field(
        default=64, metadata=limits(low=1, help="Sequences in flight at once, over all requests.")
    )
    max_queue: int = field(
        default=256, metadata=limits(low=1, help="Requests waiting to join the batch; more get a 429.")
    )
    max_request_bytes: int = field(
        default=1 << 20, metadata=limits(low=1, help="Largest request body; larger ones get a 413.")
    )
    shutdown_timeout: float = field(
        default=30.0, metadata=limits(low=0, help="Seconds in-flight requests get to finish on SIGTERM.")
    )
    api_key: str | None = field(default=None, repr=False)  # None: no key; surrounding spaces are not part of it
    defaults: SamplingConfig = SamplingConfig()

    def __post_init__(self) -> None:
        validate(self)
        if self.api_key is not None:
            if not self.api_key.strip():  # an empty variable or option must never turn authentication off
                raise ConfigError(
                    f"the key is empty or only spaces; give a key, or none (no {setting('api_key')} and no "
                    "RADD_API_KEY) to serve without one",
                    field="api_key",
                )
            object.__setattr__(self, "api_key", self.api_key.strip())
