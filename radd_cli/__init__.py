"""radd: reparameterized absorbing discrete diffusion (RADD) language models.

The library behind the `radd` command. Importing it has no side effects and loads nothing heavy: the
names below are imported on first use.

    import radd_cli
    bundle = radd_cli.load("runs/tiny/final")                # network, schedule, tokenizer
    config = radd_cli.SamplingConfig(method="tweedie", steps=64)
    result = radd_cli.generate(bundle.model, bundle.schedule, config, num_samples=4, length=64, seeds=range(4))
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("radd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_PUBLIC = {
    "RADD": "radd_cli.model",
    "ModelConfig": "radd_cli.model",
    "load": "radd_cli.pretrained",
    "save": "radd_cli.pretrained",
    "get_schedule": "radd_cli.schedule",
    "LOSSES": "radd_cli.losses",
    "SamplingConfig": "radd_cli.sampling",
    "Strategy": "radd_cli.sampling",
    "generate": "radd_cli.sampling",
    "sample": "radd_cli.sampling",
    "expected_nfe": "radd_cli.sampling",
    "evaluate_perplexity": "radd_cli.evaluation",
    "respond": "radd_cli.prompting",
    "load_recipe": "radd_cli.recipe",
    "Trainer": "radd_cli.trainer",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'radd_cli' has no attribute {name!r}")
