"""radd: reparameterized absorbing discrete diffusion (RADD) language models.

The library behind the `radd` command. Importing it has no side effects and loads nothing heavy: the
names below are imported on first use.

    import radd_cli
    bundle = radd_cli.load("runs/tiny/final")                # network, schedule, tokenizer
    config = radd_cli.SamplingConfig(method="tweedie", steps=64)
    result = radd_cli.generate(bundle.model, bundle.schedule, config, num_samples=4, length=64, seeds=range(4))
"""

import importlib.abc
import importlib.util
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("radd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_PUBLIC = {
    "RADD": "radd_cli.core.model",
    "ModelConfig": "radd_cli.core.model",
    "load": "radd_cli.io.pretrained",
    "save": "radd_cli.io.pretrained",
    "get_schedule": "radd_cli.core.schedule",
    "LOSSES": "radd_cli.core.losses",
    "SamplingConfig": "radd_cli.sampling",
    "Strategy": "radd_cli.sampling",
    "generate": "radd_cli.sampling",
    "sample": "radd_cli.sampling",
    "expected_nfe": "radd_cli.sampling",
    "evaluate_perplexity": "radd_cli.evaluation.perplexity",
    "respond": "radd_cli.sampling.prompting",
    "load_recipe": "radd_cli.training.recipe",
    "Trainer": "radd_cli.training.trainer",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'radd_cli' has no attribute {name!r}")


# radd 0.2 kept every module directly in radd_cli/; its documented module paths still import, as the modules
# that now live in the packages (`from radd_cli.losses import LOSSES` is `radd_cli.core.losses`).
_MOVED = {
    **{f"radd_cli.{name}": f"radd_cli.core.{name}" for name in ("model", "scoring", "schedule", "masking", "losses")},
    **{f"radd_cli.{name}": f"radd_cli.io.{name}" for name in ("pretrained", "tokenizer", "inference", "finetune")},
    **{f"radd_cli.{name}": f"radd_cli.data.{name}" for name in ("detokenize", "markov", "instructions", "tasks")},
    **{f"radd_cli.{name}": f"radd_cli.sampling.{name}" for name in ("templates", "prompting")},
    **{
        f"radd_cli.{name}": f"radd_cli.evaluation.{name}"
        for name in ("sample_quality", "sampler_sweep", "conditional")
    },
    **{
        f"radd_cli.{name}": f"radd_cli.training.{name}"
        for name in ("recipe", "optim", "learner", "trainer", "run_folder", "run_log", "memory", "runtime", "sharding")
    },
    "radd_cli.benchmark": "radd_cli.bench.timing",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a 0.2 module path as the module that took its place (only the names in _MOVED)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in _MOVED else None

    def create_module(self, spec):
        return import_module(_MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
