"""Choices and checked settings: one definition, coerced and checked the same way everywhere."""

import json
import pickle
from dataclasses import dataclass, field

import pytest

from radd_cli.core.losses import LOSSES, Loss
from radd_cli.errors import ConfigError
from radd_cli.validation import Choice, limits, validate


class Colour(Choice):
    red = "red"
    blue = "blue"


@dataclass(frozen=True)
class Settings:
    colour: Colour = Colour.red
    count: int = field(default=1, metadata=limits(low=1))
    rate: float = field(default=0.5, metadata=limits(above=0.0, below=1.0))
    limit: int | None = field(default=None, metadata=limits(high=10))
    tags: tuple[Colour, ...] = ()
    name: str = "x"

    def __post_init__(self):
        validate(self)


def test_a_choice_is_its_value_everywhere():
    assert Colour.red == "red" and str(Colour.red) == "red" and f"{Colour.blue:>5}" == " blue"
    assert json.dumps({"c": Colour.blue}) == '{"c": "blue"}' and Colour.names() == ["red", "blue"]
    assert list(Loss) == list(LOSSES) and Loss("t_DSE") is Loss.t_DSE
    assert pickle.loads(pickle.dumps(Loss.k_DCE)) is Loss.k_DCE  # built from a registry, still picklable


def test_validate_coerces_strings_and_whole_numbers():
    settings = Settings(colour="blue", tags=["red"])
    assert settings.colour is Colour.blue and settings.tags == (Colour.red,)
    assert isinstance(Settings(rate=1 - 1 / 2).rate, float)
    with pytest.raises(ConfigError, match="rate: must be greater than 0"):
        Settings(rate=0)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        Settings(colour="green", count=0, rate=1.0, limit=11, tags=["pink"], name=3)
    assert [str(problem) for problem in caught.value.problems] == [
        "colour: 'green' is not one of 'red', 'blue'",
        "count: must be at least 1, got 0",
        "rate: must be less than 1.0, got 1.0",
        "limit: must be at most 10, got 11",
        "tags: 'pink' is not one of 'red', 'blue'",
        "name: expected str, got int 3",
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"count": True}, "count: expected int, got bool True"),
        ({"count": 2.0}, "count: expected int, got float 2.0"),
        ({"rate": float("inf")}, "rate: must be a finite number"),
        ({"rate": "0.5"}, "rate: expected float, got str"),
        ({"tags": "red"}, "tags: expected a list"),
    ],
)
def test_wrong_types_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Settings(**kwargs)
