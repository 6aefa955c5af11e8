"""What radd sample, infill and serve share: the options made from SamplingConfig, checked before any loading,
and the records written for each sample."""

from __future__ import annotations

import json

import pytest
import torch

from radd_cli.commands import sampling_io
from radd_cli.errors import ConfigError
from radd_cli.io.inference import load_for_inference
from radd_cli.sampling import SamplingConfig, Strategy


def test_the_options_build_one_sampling_config_with_the_fields_defaults():
    defaults = {name: default for name, (_, default) in sampling_io.SAMPLING_OPTIONS.items()}
    assert sampling_io.sampling_config(**defaults) == SamplingConfig()
    chosen = sampling_io.sampling_config(**(defaults | {"method": "threshold", "threshold": 0.7, "top_k": 3}))
    assert chosen.threshold == 0.7 and chosen.strategy == Strategy("top_k", top_k=3)
    with pytest.raises(ConfigError, match="threshold: the threshold sampler needs it"):
        sampling_io.sampling_config(**(defaults | {"method": "threshold"}))


def test_each_record_holds_text_ids_seed_nfe_and_the_settings(tiny_checkpoint, tmp_path):
    loaded = load_for_inference(str(tiny_checkpoint), "cpu", "fp32")
    config = SamplingConfig(steps=8)
    request = sampling_io.Request(num_samples=2, batch_size=2, length=6, seed=10)
    result, _ = sampling_io.draw(loaded, config, request)
    rows = sampling_io.records(loaded, config, request, result, "m")
    assert [row["seed"] for row in rows] == [10, 11] and rows[0]["settings"]["steps"] == 8
    assert rows[1]["token_ids"] == result.tokens[1].tolist() and rows[1]["nfe"] == int(result.nfe_per_sample[1])
    assert torch.equal(torch.tensor(rows[0]["token_ids"]), result.tokens[0])
    path = tmp_path / "s.jsonl"
    sampling_io.write_output(path, rows)
    assert [json.loads(line)["text"] for line in path.read_text().splitlines()] == [row["text"] for row in rows]
