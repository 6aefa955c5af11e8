"""Recipes: every shipped one validates; bad ones are rejected with their key paths, all at once."""

import dataclasses
import typing

import pytest
from typer.testing import CliRunner

from radd_cli.cli import app
from radd_cli.core.schedule import SCHEDULES, parameters
from radd_cli.errors import ConfigError
from radd_cli.sampling import SamplingConfig
from radd_cli.training.recipe import Recipe, load_recipe, shipped_folder, shipped_recipes, tomllib

runner = CliRunner()


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_loads_and_validates(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.description
    assert recipe.training.batch_size % recipe.training.accumulation == 0


def test_shipped_recipes_comment_every_key():
    for entry in shipped_folder().iterdir():
        for line in entry.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                assert "#" in line, f"{entry.name}: uncommented key: {line}"


def recipe_keys(cls, prefix: str = "") -> set[str]:
    """Every key a recipe may set, sub-sections (training.lora) as dotted paths."""
    hints = typing.get_type_hints(cls)
    keys = set()
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            keys |= recipe_keys(hints[field.name], f"{prefix}{field.name}.")
        else:
            keys.add(prefix + field.name)
    return keys


def test_shipped_recipes_list_every_key():
    """Every key is in every shipped recipe (copied out to edit, a recipe shows all there is), except the name
    (the file's), the parameters of the noise schedules it does not use, and the sampler settings beyond steps and
    method: the `sampling` section takes every setting of `radd sample` (one comment says so; docs/sampling.md lists
    them), and twenty lines of defaults would bury the recipe's own choices."""
    sampler_settings = {f"sampling.{key}" for key in recipe_keys(SamplingConfig)} - {"sampling.steps", "sampling.method"}
    for entry in shipped_folder().iterdir():
        if not entry.name.endswith(".toml"):
            continue
        raw = tomllib.loads(entry.read_text())

        def listed(tree: dict, prefix: str = "") -> set[str]:
            return set().union(
                *({f"{prefix}{k}"} if not isinstance(v, dict) else listed(v, f"{prefix}{k}.") for k, v in tree.items())
            )

        used = {f"noise.{p}" for p in parameters(raw["noise"]["type"])}
        unused = {f"noise.{p}" for name in SCHEDULES for p in parameters(name)} - used
        missing = recipe_keys(Recipe) - {"name"} - unused - sampler_settings - listed(raw)
        assert not missing, f"{entry.name} lacks {sorted(missing)}"


def test_published_setups_match_the_paper():
    for name, width, blocks in (("small_radd", 768, 12), ("medium_radd", 1024, 24)):
        recipe = load_recipe(name)
        assert (recipe.model.hidden_size, recipe.model.n_blocks, recipe.model.length) == (width, blocks, 1024)
        training = recipe.training
        assert (
            training.batch_size,
            training.lr,
            training.warmup_steps,
            training.grad_clip,
            training.ema,
            training.weight_decay,
        ) == (512, 3e-4, 2500, 1.0, 0.9999, 0.0)
        assert recipe.data.train == "openwebtext" and recipe.tokenizer.name == "gpt2"


def write(tmp_path, text):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return str(path)


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path):
    path = write(
        tmp_path,
        """
[model]
widht = 3
[training]
lr = "fast"
batch_size = 0
loss_type = "mse"
[sampling]
method = "ancestral"
[optimiser]
lr = 1
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_recipe(path)
    problems = [str(problem) for problem in caught.value.problems]
    assert len(problems) == 6, problems
    expected = [
        "model.widht: unknown key",
        "training.lr: expected float, got str 'fast'",
        "training.batch_size: must be at least 1, got 0",
        "training.loss_type: 'mse' is not one of",
        "sampling.method: 'ancestral' is not one of",
        "optimiser: unknown key",
    ]
    for fragment in expected:
        assert any(fragment in problem for problem in problems), fragment


def test_overrides_use_toml_values_and_are_validated(tmp_path):
    recipe = load_recipe(
        "small_radd",
        [
            "training.loss_type=t_DCE",
            "model.n_blocks=6",
            "training.lr=1e-4",
            "logging.trackers=['tensorboard']",
            "data.train=/data/my notes.txt",
        ],
    )
    assert recipe.training.loss_type == "t_DCE" and recipe.model.n_blocks == 6 and recipe.training.lr == 1e-4
    assert recipe.logging.trackers == ("tensorboard",) and recipe.data.train == "/data/my notes.txt"
    with pytest.raises(ConfigError, match="3 problems.*must look like.*model.n_layers: unknown key.*expected int"):
        load_recipe("tiny", ["model.n_layers=6", "training.steps", "training.steps=1.5"])


def test_cross_field_checks_and_missing_recipes(tmp_path):
    with pytest.raises(ConfigError, match="model.hidden_size: 30 must be a multiple of model.n_heads \\(4\\)"):
        load_recipe("tiny", ["model.hidden_size=30", "model.n_heads=4"])
    with pytest.raises(ConfigError, match="training.batch_size: 30 must be a multiple of training.accumulation \\(4\\)"):
        load_recipe("tiny", ["training.batch_size=30", "training.accumulation=4"])
    with pytest.raises(ConfigError, match="no recipe 'nope'.*tiny"):
        load_recipe("nope")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(write(tmp_path, "[model\n"))


def test_recipes_command_lists_prints_and_copies(tmp_path):
    listed = runner.invoke(app, ["recipes"])
    assert listed.exit_code == 0 and all(name in listed.output for name in shipped_recipes())
    shown = runner.invoke(app, ["recipes", "tiny"])
    assert shown.exit_code == 0 and "[training]" in shown.output
    target = tmp_path / "mine.toml"
    assert runner.invoke(app, ["recipes", "tiny", "--copy", str(target)]).exit_code == 0
    assert load_recipe(str(target)).name == "mine"
    again = runner.invoke(app, ["recipes", "tiny", "--copy", str(target)])
    assert again.exit_code == 2 and "pass --force" in again.output
    assert runner.invoke(app, ["recipes", "tiny", "--copy", str(target), "--force"]).exit_code == 0
    missing = runner.invoke(app, ["recipes", "tiny", "--copy", str(tmp_path / "nowhere" / "x.toml")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_train_rejects_a_bad_recipe_before_any_work(tmp_path):
    result = runner.invoke(
        app, ["train", "--recipe", "tiny", "training.lr=-1", "model.dropout=2", "--run-dir", str(tmp_path / "run")]
    )
    assert result.exit_code == 2
    assert "training.lr: must be greater than 0.0" in result.output and "model.dropout" in result.output
    assert not (tmp_path / "run").exists()


def test_recipes_live_in_the_top_level_folder_and_every_package_is_installed():
    from pathlib import Path

    from radd_cli.training.recipe import tomllib

    root = Path(__file__).parents[2]
    assert sorted(p.stem for p in (root / "recipes").glob("*.toml")) == sorted(shipped_recipes())
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {str(p.parent.relative_to(root)).replace("/", ".") for p in (root / "radd_cli").rglob("__init__.py")}
    assert packages | {"radd_cli.recipes"} == set(setup["packages"]), "list every radd_cli package in pyproject.toml"
    assert setup["package-dir"]["radd_cli.recipes"] == "recipes"
