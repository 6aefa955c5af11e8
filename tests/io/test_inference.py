"""Loading for sampling and evaluation: device and precision are checked before anything is read."""

import pytest
import torch

from radd_cli import device
from radd_cli.device import Precision, Work
from radd_cli.errors import CheckpointError, ConfigError
from radd_cli.io.inference import load_for_inference


def test_a_checkpoint_loads_in_eval_mode_with_its_tokenizer_and_schedule(tiny_checkpoint):
    loaded = load_for_inference(str(tiny_checkpoint), "cpu", "fp32")
    assert not loaded.model.training and loaded.device == torch.device("cpu")
    assert loaded.precision is Precision.fp32 and loaded.tokenizer.vocab_size == loaded.model.vocab_size
    assert loaded.schedule.name == "loglinear"


def test_auto_is_the_precision_of_the_work_the_model_is_loaded_for(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    found = {work: load_for_inference(str(tiny_checkpoint), "cpu", "auto", work).precision for work in Work}
    assert found == {Work.train: Precision.fp32, Work.sample: Precision.bf16, Work.eval: Precision.bf16,
                     Work.serve: Precision.bf16}
    assert load_for_inference(str(tiny_checkpoint), "cpu").precision is Precision.bf16  # sampling by default


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_a_bad_device_or_precision_fails_before_the_model_is_looked_for(tmp_path):
    with pytest.raises(ConfigError, match="device: cuda asks for a GPU"):
        load_for_inference(str(tmp_path / "nowhere"), "cuda")
    with pytest.raises(ConfigError, match="needs a GPU"):
        load_for_inference(str(tmp_path / "nowhere"), "cpu", "fp16")
    with pytest.raises(CheckpointError, match="no such folder"):
        load_for_inference(str(tmp_path / "nowhere"), "cpu")
