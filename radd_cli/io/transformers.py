"""Model folders for Hugging Face transformers (docs/model-files.md, "the transformers layout").

`export` writes a folder that `AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)` (and
`AutoModel`, `AutoConfig`, `AutoTokenizer`) loads without radd installed:

    config.json            RaddConfig's values, `model_type: radd`, `auto_map`, radd's noise schedule
    configuration_radd.py  RaddConfig (hf_code/configuration_radd.py)
    modeling_radd.py       RaddForMaskedLM around radd's network, whose source is copied in verbatim
    model.safetensors      the weights, named `radd.<radd's name>`
    tokenizer files        radd's tokenizer plus a mask token, the last id

The network is not a second copy kept by hand: `modeling_source()` builds modeling_radd.py from the text of
radd's own modules (NETWORK_MODULES) when the folder is written. `read` reads such a folder back for radd.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
from importlib import metadata, resources
from pathlib import Path

import torch

from radd_cli.core.model import RADD, ModelShape, shape_values
from radd_cli.errors import CheckpointError
from radd_cli.files import write_atomically, write_text

MODEL_TYPE = "radd"
PREFIX = "radd."  # the weights' names in the folder: the transformers model holds radd's network as `radd`
MASK_TOKEN = "<|mask|>"
AUTO_MAP = {
    "AutoConfig": "configuration_radd.RaddConfig",
    "AutoModel": "modeling_radd.RaddForMaskedLM",
    "AutoModelForMaskedLM": "modeling_radd.RaddForMaskedLM",
}
# radd's network and what it imports of radd, in dependency order: copied verbatim into modeling_radd.py.
NETWORK_MODULES = (
    "radd_cli.errors",
    "radd_cli.validation",
    "radd_cli.core.scoring",
    "radd_cli.core.kv_cache",
    "radd_cli.core.model",
)
NETWORK_MARKER = "# <radd network>"
CODE_FILES = ("configuration_radd.py", "modeling_radd.py")
_SHAPE_KEYS = tuple(key for key in shape_values(ModelShape()) if key != "attention")


def _template(name: str) -> str:
    return (resources.files(__package__) / "hf_code" / name).read_text(encoding="utf-8")


def network_source() -> str:
    """The source of NETWORK_MODULES as one module: each file's text, without `from __future__` and without
    its imports of the other NETWORK_MODULES (their names are defined above it in the same file)."""
    pieces = []
    for name in NETWORK_MODULES:
        path = Path(inspect.getfile(importlib.import_module(name)))
        text = path.read_text(encoding="utf-8")
        drop = set()
        for node in ast.parse(text).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(module == "__future__" for module in imported):
                    drop.update(range(node.lineno, node.end_lineno + 1))
                elif any(module.startswith("radd_cli") for module in imported):
                    outside = [module for module in imported if module not in NETWORK_MODULES]
                    if outside:  # the network must stay self-contained for this file to work without radd
                        raise RuntimeError(f"{path} imports {outside}, which modeling_radd.py does not contain")
                    drop.update(range(node.lineno, node.end_lineno + 1))
        kept = [line for number, line in enumerate(text.splitlines(), start=1) if number not in drop]
        pieces.append(f"# ---- {name.replace('.', '/')}.py (radd {radd_version()}) ----\n" + "\n".join(kept).strip())
    return "\n\n\n".join(pieces)


def modeling_source() -> str:
    """modeling_radd.py: the transformers classes of hf_code/modeling_radd.py around radd's network."""
    return _template("modeling_radd.py").replace(NETWORK_MARKER, network_source())


def radd_version() -> str:
    try:
        return metadata.version("radd")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def hf_config(model: RADD, noise: dict, tokenizer) -> dict:
    """config.json of the transformers layout (RaddConfig's fields, auto_map, radd's noise schedule)."""
    config = model.config
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["RaddForMaskedLM"],
        "auto_map": AUTO_MAP,
        "vocab_size": config.vocab_size + 1,
        "mask_token_id": config.vocab_size,
        **{key: getattr(config, key) for key in _SHAPE_KEYS},
        "attention": "sdpa",
        "noise": noise,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.eos_token_id,
        "radd_version": radd_version(),
    }


def with_mask_token(hf_tokenizer, vocab_size: int):
    """A copy of the tokenizer with MASK_TOKEN as its mask token, id `vocab_size` (radd's mask id)."""
    tokenizer = copy.deepcopy(hf_tokenizer)
    tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    if tokenizer.mask_token_id != vocab_size or len(tokenizer) != vocab_size + 1:
        raise CheckpointError(
            f"the tokenizer already has a token {MASK_TOKEN!r} (id {tokenizer.mask_token_id}); radd's mask must be "
            f"the new id {vocab_size}, so the transformers layout cannot be written with this tokenizer"
        )
    return tokenizer


def export(model: RADD, directory: str | Path, *, noise: dict, hf_tokenizer) -> Path:
    """Write the transformers layout of `model` into `directory` (each file atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = with_mask_token(hf_tokenizer, model.vocab_size)
    tokenizer.save_pretrained(str(directory))
    write_text(directory / "configuration_radd.py", _template("configuration_radd.py"))
    write_text(directory / "modeling_radd.py", modeling_source())
    tensors = {PREFIX + key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    write_atomically(directory / "model.safetensors", lambda tmp: _save_file(tensors, tmp))
    write_text(directory / "config.json", json.dumps(hf_config(model, noise, tokenizer), indent=2) + "\n")
    return directory


def _save_file(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def is_transformers_config(config: dict) -> bool:
    return config.get("model_type") == MODEL_TYPE and isinstance(config.get("auto_map"), dict)


def model_values(config: dict, where: Path) -> dict:
    """radd's ModelConfig values from a transformers config.json (vocab_size counts the real tokens)."""
    missing = [key for key in ("vocab_size", "mask_token_id", *_SHAPE_KEYS) if key not in config]
    if missing:
        raise CheckpointError(f"{where}: the transformers config lacks {', '.join(missing)}")
    if config["mask_token_id"] != config["vocab_size"] - 1:
        raise CheckpointError(f"{where}: mask_token_id must be vocab_size - 1 (radd's mask is the last id)")
    return {"vocab_size": config["vocab_size"] - 1, **{key: config[key] for key in _SHAPE_KEYS}}


def radd_weights(state_dict: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """The folder's weights under radd's names (without the `radd.` of the transformers model)."""
    strange = [key for key in state_dict if not key.startswith(PREFIX)]
    if strange:
        raise CheckpointError(f"{where}: weights outside the network ({', '.join(strange[:3])}); not a radd export")
    return {key[len(PREFIX) :]: value for key, value in state_dict.items()}
