"""The README's commands stay true: its test command is what CI runs, and its radd commands parse."""

import re
import shlex
from pathlib import Path

import typer
from typer.testing import CliRunner

from radd_cli.cli import app

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def code_lines() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    test_command = "pip install -e '.[test]' && python -m pytest -q"
    assert test_command in code_lines()
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_quick_start_is_two_commands_that_train_the_default_and_run_the_tests():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in re.findall(r"```bash\n(.*?)```", quick_start, flags=re.S)]
    assert commands == ["pip install -e . && radd train", "pip install -e '.[test]' && python -m pytest -q"]


def test_every_radd_command_in_the_readme_parses():
    """Each `radd ...` line resolves to a command (its --help works) whose options exist."""
    runner, root = CliRunner(), typer.main.get_command(app)
    for line in code_lines():
        for part in line.split("&&"):
            words = shlex.split(part.strip())
            if not words or words[0] != "radd" or "--help" in words:
                continue
            command = [w for w in words[1:] if not w.startswith("-")][:2]
            names = command[:2] if command and command[0] == "bench" else command[:1]
            result = runner.invoke(app, [*names, "--help"])
            assert result.exit_code == 0, (line, result.output)
            command = root
            for name in names:
                command = command.get_command(None, name)
            flags = {flag for param in command.params for flag in [*param.opts, *param.secondary_opts]}
            for option in (w.split("=")[0] for w in words if w.startswith("--")):
                assert option in flags, (line, option)


def test_every_document_the_readme_links_exists_and_none_cites_outside_material():
    links = re.findall(r"\]\(((?!https?://)[^)\s,#]+)\)", README)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert (ROOT / link).exists(), link
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "radd_cli").rglob("*.py")]:
        assert "SPEC" not in path.read_text(), f"{path} cites a document outside the repository"
    for path in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(((?!https?://)[^)\s,#]+)\)", path.read_text()):
            assert (path.parent / link).exists(), (path.name, link)
