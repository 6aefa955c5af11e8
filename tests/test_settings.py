"""Each sampling setting is declared once, as a SamplingConfig field, and reaches every edge from there:
the options of radd sample, radd infill and radd serve, the recipes' sampling section and the server's fields."""

from __future__ import annotations

import dataclasses

import pytest
from typer.main import get_command

from radd_cli.cli import app
from radd_cli.errors import ConfigError
from radd_cli.sampling import SamplingConfig, Strategy
from radd_cli.sampling.config import FLAT_SETTINGS, from_settings
from radd_cli.serve.completions import OPENAI_SETTINGS, RADD_FIELDS
from radd_cli.training.recipe import SamplingSection, load_recipe
from radd_cli.validation import field_label

COMMANDS = get_command(app).commands


def options_of(verb: str) -> dict:
    return {param.name: param for param in COMMANDS[verb].params}


@pytest.mark.parametrize("verb", ["sample", "infill", "serve"])
def test_every_sampling_setting_is_an_option_with_the_fields_default(verb):
    options = options_of(verb)
    for field in dataclasses.fields(SamplingConfig):
        if field.name == "strategy":
            continue
        assert field.name in options, f"radd {verb} has no option for {field.name}"
        assert options[field.name].default == field.default or field.name == "order", field.name
        assert options[field.name].help == field.metadata["help"]
    for field in dataclasses.fields(Strategy):
        assert field_label(field) in options
    assert options["temperature"].default == Strategy().temperature


def test_every_sampling_setting_is_a_recipe_key_and_a_request_field():
    keys = {field.name for field in dataclasses.fields(SamplingSection)}
    assert {field.name for field in dataclasses.fields(SamplingConfig)} <= keys
    assert set(FLAT_SETTINGS) <= set(RADD_FIELDS) | set(OPENAI_SETTINGS)
    recipe = load_recipe("tiny", ["sampling.method=confidence", "sampling.confidence=margin", "sampling.block_length=16"])
    config = recipe.sampling.config()
    assert (config.method, config.confidence, config.block_length, config.steps) == ("confidence", "margin", 16, 64)
    with pytest.raises(ConfigError, match="sampling.threshold: applies to threshold, not to tweedie"):
        load_recipe("tiny", ["sampling.threshold=0.8"])


def test_flat_settings_merge_onto_a_base_the_same_way_for_every_edge():
    base = from_settings({"method": "threshold", "threshold": 0.9, "block_length": 4, "top_k": 5})
    switched = from_settings({"method": "tweedie", "steps": 32}, base)  # the threshold does not carry over
    assert (switched.threshold, switched.block_length, switched.steps) == (None, 4, 32)
    assert switched.strategy == base.strategy
    warmer = from_settings({"temperature": 2.0}, base)
    assert warmer.strategy == Strategy("top_k", top_k=5, temperature=2.0)
    with pytest.raises(ConfigError, match="unknown sampling setting 'colour'"):
        from_settings({"colour": "blue"})
