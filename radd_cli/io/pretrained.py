"""Model folders on disk (docs/model-files.md): this project's layout, the published layout, training
runs of the published code, and the transformers layout that `radd convert --to transformers` writes. `load` returns an explicit bundle (network, schedule, tokenizer,
source); `save` writes this project's layout.

- this project's layout: `config.json` with `radd_format`, `model`, `noise`, `tokenizer`, and
  `model.safetensors`, plus tokenizer files when the tokenizer was trained for the model;
- the published layout: `config.json` holding the whole training config (`tokens`, `model`, `noise`,
  …) and `model.safetensors` or `pytorch_model.bin`, from a folder or a Hub repo id;
- a training run of the published code: `.hydra/config.yaml` and `checkpoints-meta/checkpoint.pth`;
- the transformers layout: `config.json` with `model_type: radd` and `auto_map`, the weights under `radd.`,
  the tokenizer with its mask token (transformers.py);
- LoRA adapters as peft writes them, read as the model they name with the adapters merged in (adapters.py).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from radd_cli.core.model import RADD, ModelConfig, ModelShape, shape_values
from radd_cli.core.schedule import Schedule, schedule_from_config
from radd_cli.errors import CheckpointError, ConfigError, setting
from radd_cli.files import WRITE_ERRORS, WriteError, cause, remove, temporary_sibling, write_atomically, write_text
from radd_cli.io import adapters
from radd_cli.io import transformers as hf_layout
from radd_cli.io.tokenizer import Tokenizer, load_tokenizer

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "pytorch_model.bin"
RUN_CONFIG = Path(".hydra") / "config.yaml"
RUN_CHECKPOINT = Path("checkpoints-meta") / "checkpoint.pth"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")
HUB_PATTERNS = [CONFIG_FILE, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE, *TOKENIZER_FILES]
BUFFERS = ("rotary_emb.inv_freq",)
_MODEL_KEYS = tuple(key for key in shape_values(ModelShape()) if key != "attention")  # what config.json records


@dataclass
class Pretrained:
    """A loaded model folder: the network, its noise schedule and tokenizer, and what was read."""

    model: RADD
    noise: dict  # the schedule's configuration, as the files give it
    schedule: Schedule
    tokenizer_source: str | None  # a Hub name, or a folder that holds tokenizer files
    tokenizer: Tokenizer | None  # loaded unless load(..., with_tokenizer=False)
    source: str  # what was read, for messages


def load(
    path_or_repo_id: str | Path, *, ema: bool = True, attention: str = "sdpa", with_tokenizer: bool = True
) -> Pretrained:
    """Load radd's layout, a published model (folder or Hub id) or a published training run.

    For a training run, `ema` picks the EMA weights (the ones to sample and evaluate with).
    `attention` is how this process computes attention, not a property of the weights.
    """
    files = read(path_or_repo_id, ema=ema)
    model = RADD(_model_config(files, attention))
    load_state_dict_strict(model, files.state_dict, files.source)
    try:
        schedule = schedule_from_config(files.noise)
    except ConfigError as error:
        raise CheckpointError(f"{files.source}: the noise config is invalid ({error})") from None
    tokenizer = _matching_tokenizer(files, model) if with_tokenizer else None
    return Pretrained(model, files.noise, schedule, files.tokenizer, tokenizer, files.source)


def _model_config(files: PretrainedFiles, attention: str) -> ModelConfig:
    """The network's config from what the files say; a missing or mistyped value is a CheckpointError."""
    keys = ("vocab_size", *_MODEL_KEYS)
    missing = [key for key in keys if key not in files.model]
    if missing:
        raise CheckpointError(f"{files.source}: the model config lacks {', '.join(missing)}")
    try:
        return ModelConfig(**{key: files.model[key] for key in keys}, attention=attention)
    except ConfigError as error:
        raise CheckpointError(f"{files.source}: the model config is invalid ({error})") from None


def _matching_tokenizer(files: PretrainedFiles, model: RADD) -> Tokenizer:
    if not files.tokenizer:
        raise CheckpointError(f"{files.source} does not say which tokenizer it uses; add one with radd convert")
    tokenizer = load_tokenizer(files.tokenizer)
    if tokenizer.vocab_size != model.vocab_size:
        raise CheckpointError(
            f"{files.source}: the model has {model.vocab_size} tokens but its tokenizer {files.tokenizer} has "
            f"{tokenizer.vocab_size}; give the model folder the tokenizer it was trained with"
        )
    return tokenizer


def save(model: RADD, directory: str | Path, *, noise: dict | None = None, tokenizer=None) -> Path:
    """Write radd's layout for `model`: config.json + model.safetensors (+ the tokenizer's files)."""
    shape = {key: value for key, value in shape_values(model.config).items() if key != "attention"}
    return write(
        directory,
        model_config={"vocab_size": model.config.vocab_size, **shape},
        state_dict=model.state_dict(),
        noise=noise,
        tokenizer=tokenizer,
    )


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict, source: str) -> None:
    """load_state_dict(strict=True), with missing/unexpected keys and shape mismatches as one line."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches (file vs config) {_few(wrong)}")
    if problems:
        raise CheckpointError(
            f"{source}: weights do not match the network its config describes: " + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True)


def _few(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@dataclass
class PretrainedFiles:
    """What a model folder holds, in this project's terms."""

    model: dict  # ModelConfig keyword arguments
    state_dict: dict[str, torch.Tensor]
    noise: dict  # {"type": ..., schedule parameters}
    tokenizer: str | None  # a Hub name, or a folder that holds tokenizer files
    source: str  # what was read, for messages


def read(path_or_repo_id: str | Path, *, ema: bool = True) -> PretrainedFiles:
    folder = resolve(path_or_repo_id)
    if adapters.is_adapter_folder(folder):
        return _read_adapter(folder)
    layout = detect_layout(folder)
    if layout == "radd":
        return _read_own(folder)
    if layout == "published":
        return _read_published(folder)
    if layout == "transformers":
        return _read_transformers(folder)
    return _read_training_run(folder, ema=ema)


def resolve(path_or_repo_id: str | Path) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded (or found in the Hub cache)."""
    text = str(path_or_repo_id)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; give the model folder that holds {CONFIG_FILE}")
        return path
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        raise CheckpointError(f"{text}: no such folder (and not a Hub repo id of the form owner/name)")
    return _download(text)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, HfHubHTTPError, HFValidationError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"cannot get {repo_id} from the Hugging Face Hub ({reason}). Where the Hub is reachable run "
            f"`hf download {repo_id} --local-dir DIR`, then pass DIR instead of the repo id"
        ) from error


def detect_layout(folder: Path) -> str:
    if (folder / RUN_CONFIG).is_file():
        return "training_run"
    config_path = folder / CONFIG_FILE
    if not config_path.is_file() and (folder / "recipe.json").is_file():  # a `radd train` run folder
        hint = f"its model is {folder / 'final'}" if (folder / "final").is_dir() else "it has no final/ model yet"
        raise CheckpointError(f"{folder} is a radd train run folder, not a model; {hint}")
    if not config_path.is_file():
        raise CheckpointError(
            f"{folder} is not a model folder: it has neither {CONFIG_FILE} (a model) nor {RUN_CONFIG} "
            "(a training run of the published code)"
        )
    config = _read_json(config_path)
    if "radd_format" in config:
        return "radd"
    if "tokens" in config and isinstance(config.get("model"), dict):
        return "published"
    if hf_layout.is_transformers_config(config):
        return "transformers"
    raise CheckpointError(
        f"{config_path}: unknown layout (expected `radd_format` for this project's layout, `tokens` "
        "and `model` for the published one, or `model_type: radd` for a transformers folder radd wrote)"
    )


def _read_own(folder: Path) -> PretrainedFiles:
    config = _read_json(folder / CONFIG_FILE)
    if not isinstance(config["radd_format"], int) or isinstance(config["radd_format"], bool):
        raise CheckpointError(f"{folder / CONFIG_FILE}: `radd_format` should be a whole number")
    if config["radd_format"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} was written by a newer radd (format {config['radd_format']}); upgrade radd to read it"
        )
    for key in ("model", "noise"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{folder / CONFIG_FILE}: the `{key}` section is missing")
    tokenizer = config.get("tokenizer")
    if tokenizer == ".":
        tokenizer = str(folder)
    return PretrainedFiles(
        model=config["model"],
        state_dict=_load_weights(folder),
        noise=config["noise"],
        tokenizer=tokenizer,
        source=str(folder),
    )


def _read_published(folder: Path) -> PretrainedFiles:
    config = _read_json(folder / CONFIG_FILE)
    return PretrainedFiles(
        model=_published_model_config(config, folder / CONFIG_FILE),
        state_dict=_strip_wrappers(_load_weights(folder)),
        noise=dict(config.get("noise") or {"type": "loglinear"}),
        tokenizer=_published_tokenizer(config),
        source=str(folder),
    )


def _read_adapter(folder: Path) -> PretrainedFiles:
    """LoRA adapters (io/adapters.py) merged into the model they name, which is read like any other."""
    config, weights = adapters.read(folder)
    base = read(config["base_model_name_or_path"])
    return PretrainedFiles(
        model=base.model,
        state_dict=adapters.merge(base.state_dict, weights, adapters.scaling(config)),
        noise=base.noise,
        tokenizer=base.tokenizer,
        source=f"{folder} (LoRA rank {config['r']} on {base.source})",
    )


def _read_transformers(folder: Path) -> PretrainedFiles:
    config = _read_json(folder / CONFIG_FILE)
    return PretrainedFiles(
        model=hf_layout.model_values(config, folder / CONFIG_FILE),
        state_dict=hf_layout.radd_weights(_load_weights(folder), folder),
        noise=dict(config.get("noise") or {"type": "loglinear"}),
        tokenizer=str(folder),
        source=str(folder),
    )


def _read_training_run(folder: Path, *, ema: bool) -> PretrainedFiles:
    import yaml

    config_path = folder / RUN_CONFIG
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as error:
        raise CheckpointError(f"{config_path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(config, dict) or "tokens" not in config or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{config_path}: expected the published config tree with `tokens` and `model`")
    checkpoint_path = folder / RUN_CHECKPOINT
    if not checkpoint_path.is_file():
        raise CheckpointError(f"{folder} is a training run without {RUN_CHECKPOINT}; was a checkpoint ever saved?")
    checkpoint = _torch_load(checkpoint_path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(f"{checkpoint_path}: expected a dict with a `model` state dict")
    state_dict = _strip_wrappers(checkpoint["model"])
    if ema:
        state_dict = apply_ema(state_dict, checkpoint.get("ema"), checkpoint_path)
    return PretrainedFiles(
        model=_published_model_config(config, config_path),
        state_dict=state_dict,
        noise=dict(config.get("noise") or {"type": "loglinear"}),
        tokenizer=_published_tokenizer(config),
        source=f"{folder} ({'EMA' if ema else 'raw'} weights, step {checkpoint.get('step', '?')})",
    )


def _published_model_config(config: dict, where: Path) -> dict:
    section = config["model"]
    missing = [key for key in _MODEL_KEYS if key not in section]
    if missing:
        raise CheckpointError(f"{where}: `model` lacks {', '.join(missing)}")
    return {"vocab_size": config["tokens"], **{key: section[key] for key in _MODEL_KEYS}}


def _published_tokenizer(config: dict) -> str:
    # The published models use the GPT-2 tokenizer; a config may name another.
    data = config.get("data") or {}
    return data.get("tokenizer") or "gpt2"


def parameter_order(keys) -> list[str]:
    """Trainable parameter names in the published order (docs/model-files.md), buffers left out."""
    in_block = [
        "norm1.weight",
        "norm1.bias",
        "attn_qkv.weight",
        "attn_out.weight",
        "norm2.weight",
        "norm2.bias",
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.2.weight",
        "mlp.2.bias",
    ]
    at_end = [
        "output_layer.norm_final.weight",
        "output_layer.norm_final.bias",
        "output_layer.linear.weight",
        "output_layer.linear.bias",
    ]

    def rank(name: str) -> tuple:
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
        if match:
            rest = match.group(2)
            return (1, int(match.group(1)), in_block.index(rest) if rest in in_block else len(in_block), rest)
        if name in at_end:
            return (2, 0, at_end.index(name), name)
        return (0, 0, 0, name)

    return sorted((key for key in keys if key not in BUFFERS), key=rank)


def apply_ema(state_dict: dict, ema: dict | None, where: Path) -> dict:
    if not isinstance(ema, dict) or "shadow_params" not in ema:
        raise CheckpointError(
            f"{where} has no EMA weights (`ema.shadow_params`); set {setting('ema', False)} to use the raw ones"
        )
    names = parameter_order(state_dict)
    shadow = ema["shadow_params"]
    if len(shadow) != len(names):
        raise CheckpointError(f"{where}: {len(shadow)} EMA tensors for {len(names)} model parameters")
    merged = dict(state_dict)
    for name, tensor in zip(names, shadow):
        if tensor.shape != state_dict[name].shape:
            raise CheckpointError(
                f"{where}: EMA tensor for {name} has shape {tuple(tensor.shape)}, "
                f"the model's is {tuple(state_dict[name].shape)}"
            )
        merged[name] = tensor.to(state_dict[name].dtype)
    return merged


def _strip_wrappers(state_dict: dict) -> dict:
    """Drop the `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes."""
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", key): value for key, value in state_dict.items()}


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """The tensor shapes a safetensors file declares (read from its header only), or None when unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError):
        return None


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / WEIGHTS_FILE).is_file():
        try:
            return load_file(folder / WEIGHTS_FILE)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{folder / WEIGHTS_FILE} cannot be read ({error})") from error
    if (folder / LEGACY_WEIGHTS_FILE).is_file():
        return _torch_load(folder / LEGACY_WEIGHTS_FILE)
    raise CheckpointError(f"{folder} has a {CONFIG_FILE} but no weights ({WEIGHTS_FILE} or {LEGACY_WEIGHTS_FILE})")


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read as a torch checkpoint ({str(error).splitlines()[0]})") from error


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} cannot be read as JSON ({error})") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} should hold a JSON object")
    return value


def write(directory: str | Path, *, model_config: dict, state_dict: dict, noise: dict | None, tokenizer) -> Path:
    """Write this project's layout; each file goes to a temporary name first and is then renamed, so a
    failed write (a full disk) leaves every file of the folder as it was."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create {directory}: {cause(error)}") from error
    tokenizer_entry = _write_tokenizer(directory, tokenizer)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state_dict.items()}
    write_atomically(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    config = {
        "radd_format": FORMAT_VERSION,
        "model": model_config,
        "noise": noise or {"type": "loglinear"},
        "tokenizer": tokenizer_entry,
    }
    write_text(directory / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return directory


def _write_tokenizer(directory: Path, tokenizer) -> str | None:
    """Save a tokenizer object or copy a tokenizer folder next to the weights; keep a Hub name as is."""
    if tokenizer is None:
        return None
    source = None if hasattr(tokenizer, "save_pretrained") else Path(str(tokenizer))
    if source is not None and not source.is_dir():
        return str(tokenizer)  # a Hub name
    if source is not None and source.resolve() == directory.resolve():
        return "."
    staging = temporary_sibling(directory / "tokenizer", "new")
    try:
        staging.mkdir()
        if source is None:
            tokenizer.save_pretrained(staging)
        else:
            for name in TOKENIZER_FILES:
                if (source / name).is_file():
                    shutil.copyfile(source / name, staging / name)
        for file in staging.iterdir():
            os.replace(file, directory / file.name)  # each file appears complete, or not at all
    except WRITE_ERRORS as error:
        raise WriteError(f"cannot write the tokenizer into {directory}: {cause(error)}") from error
    finally:
        remove(staging)
    return "."
