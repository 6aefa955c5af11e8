"""The transformers layout: a folder that transformers loads without radd (checked in a process that cannot
import radd), whose log-probabilities are radd's, whose network is radd's own source, and that radd reads back."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from radd_cli.core.model import RADD
from radd_cli.errors import CheckpointError
from radd_cli.io import transformers as hf_layout
from radd_cli.io.pretrained import load, save

TEXT = "The owl sat on the log. It was curious."

# Runs in a Python that sees site-packages (torch, transformers) but not radd: `-I -S` drops the path set-up,
# and the site folders are added without their .pth files (which is how radd's editable install is found).
OUTSIDE_RADD = """
import importlib.util, json, sys
sys.path.extend(json.loads(sys.argv[1]))
assert importlib.util.find_spec("radd_cli") is None, "radd is importable here"
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer

folder, tokens = sys.argv[2], torch.load(sys.argv[3])
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
masked_lm = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
plain = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    logits = masked_lm(tokens).logits
    same = torch.equal(plain(tokens, attention_mask=torch.ones_like(tokens)).logits, logits)
torch.save(logits, sys.argv[4])
print(json.dumps({
    "config": [type(config).__name__, config.vocab_size, config.mask_token_id],
    "tokenizer": [tokenizer.mask_token_id, len(tokenizer), tokenizer.eos_token_id, tokenizer(sys.argv[5])["input_ids"]],
    "classes": [type(masked_lm).__name__, type(plain).__name__],
    "automodel_same": same,
}))
"""


def site_folders() -> list[str]:
    return [folder for folder in site.getsitepackages() if Path(folder).is_dir()]


def load_without_radd(folder: Path, tokens: torch.Tensor, work: Path) -> tuple[dict, torch.Tensor]:
    """What transformers alone makes of `folder`: a summary and the logits of `tokens`."""
    torch.save(tokens, work / "tokens.pt")
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(work / "modules"),
        "HOME": str(work),
        "OMP_NUM_THREADS": "1",
        "PATH": os.environ.get("PATH", ""),
    }
    args = [json.dumps(site_folders()), str(folder), str(work / "tokens.pt"), str(work / "logits.pt"), TEXT]
    finished = subprocess.run(
        [sys.executable, "-I", "-S", "-c", OUTSIDE_RADD, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=work,
        stdin=subprocess.DEVNULL,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    return json.loads(finished.stdout.strip().splitlines()[-1]), torch.load(work / "logits.pt")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint):
    bundle = load(tiny_checkpoint)
    folder = tmp_path_factory.mktemp("hf") / "model"
    hf_layout.export(bundle.model, folder, noise=bundle.noise, hf_tokenizer=bundle.tokenizer.hf)
    return bundle, folder


def masked_tokens(vocab_size: int, length: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab_size, (3, length), generator=generator)
    tokens[torch.rand(tokens.shape, generator=generator) < 0.5] = vocab_size  # half the positions masked
    return tokens


def test_transformers_alone_loads_the_folder_and_gives_radds_log_probs(exported, tmp_path):
    bundle, folder = exported
    model, tokenizer = bundle.model.eval(), bundle.tokenizer
    vocab = model.vocab_size
    tokens = masked_tokens(vocab, model.config.length)
    summary, logits = load_without_radd(folder, tokens, tmp_path)
    assert summary["config"] == ["RaddConfig", vocab + 1, vocab]
    assert summary["classes"] == ["RaddForMaskedLM", "RaddForMaskedLM"] and summary["automodel_same"]
    assert summary["tokenizer"] == [vocab, vocab + 1, tokenizer.eos_id, tokenizer.encode(TEXT)]
    assert logits.shape == (3, model.config.length, vocab + 1) and logits.dtype == torch.float32
    assert torch.isneginf(logits[..., vocab]).all()  # the mask token is never predicted
    with torch.no_grad():
        ours = model(tokens)  # (B, L, V) log-probs
    torch.testing.assert_close(logits.log_softmax(-1)[..., :vocab], ours, rtol=0, atol=1e-6)


def test_the_network_in_the_folder_is_radds_own_source(exported):
    _, folder = exported
    written = (folder / "modeling_radd.py").read_text()
    for module in hf_layout.NETWORK_MODULES:
        source = Path(__import__(module, fromlist=["_"]).__file__).read_text()
        body = source.split("\n\n\n", 1)[1]  # after the imports: every class and function as radd has it
        assert body.strip() in written, module
    imports = [node for node in ast.walk(ast.parse(written)) if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [getattr(node, "module", None) or node.names[0].name for node in imports]
    assert not [name for name in names if name.startswith("radd_cli")]  # nothing of radd is imported
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == hf_layout.AUTO_MAP and config["model_type"] == "radd"


def test_radd_reads_the_folder_back_exactly(exported, tmp_path):
    bundle, folder = exported
    again = load(folder)
    assert again.model.config == bundle.model.config and again.noise == bundle.noise
    for key, value in bundle.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key
    assert again.tokenizer.vocab_size == bundle.tokenizer.vocab_size  # the mask token is radd's mask id
    assert again.tokenizer.encode(TEXT) == bundle.tokenizer.encode(TEXT)
    assert again.tokenizer.decode([*bundle.tokenizer.encode("The owl"), again.tokenizer.mask_id]) == "The owl[MASK]"
    save(again.model, tmp_path / "radd", noise=again.noise, tokenizer=again.tokenizer_source)  # and on to radd's layout
    assert load(tmp_path / "radd").tokenizer.vocab_size == bundle.tokenizer.vocab_size


def test_weights_that_are_not_a_radd_export_are_refused(exported, tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = exported
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in folder.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    weights = load_file(copy / "model.safetensors")
    weights["lm_head.weight"] = torch.zeros(1)
    save_file(weights, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match="weights outside the network .*lm_head.weight"):
        load(copy)


def test_a_tokenizer_that_already_has_the_mask_token_is_refused(tiny_checkpoint, tmp_path):
    bundle = load(tiny_checkpoint)
    taken = hf_layout.with_mask_token(bundle.tokenizer.hf, bundle.model.vocab_size)  # V + 1 tokens now
    model = RADD(dataclasses.replace(bundle.model.config, vocab_size=len(taken)))
    with pytest.raises(CheckpointError, match="already has a token '<|mask|>'"):
        hf_layout.export(model, tmp_path / "out", noise=bundle.noise, hf_tokenizer=taken)
