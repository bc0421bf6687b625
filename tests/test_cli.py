"""The `cryptoviz` entry point: each image carries one component's dependencies, so listing the
commands must not import any of them, and a command whose dependencies are missing says which extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from cryptoviz.cli import SUBCOMMANDS, LazyGroup, cli

# A child python in which importing numpy fails, as in the scraper's image.
WITHOUT_NUMPY = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "numpy":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    sys.argv = ["cryptoviz", *sys.argv[1:]]
    from cryptoviz.cli import main
    main()
    """
)


def run_without_numpy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_NUMPY, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_help_lists_every_command_without_importing_any():
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from click.testing import CliRunner; from cryptoviz.cli import cli;"
            "r = CliRunner().invoke(cli, ['--help']); print(r.output);"
            "print(sorted(m for m in sys.modules if m.startswith('cryptoviz.') and m.endswith('.cli')"
            " and m != 'cryptoviz.cli'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for name, command in SUBCOMMANDS.items():
        assert f"{name} " in listing and command.summary[:30] in listing
    assert listing.strip().splitlines()[-1] == "[]"


def test_help_works_where_another_component_cannot_import():
    answer = run_without_numpy("--help")
    assert answer.returncode == 0, answer.stderr
    assert "dev " in answer.stdout and "Traceback" not in answer.stderr


def test_a_command_missing_its_dependencies_names_the_extra_not_a_traceback():
    answer = run_without_numpy("dev", "--help")
    assert answer.returncode == 1
    assert "needs 'numpy'" in answer.stderr and "cryptoviz[dev]" in answer.stderr
    assert "Traceback" not in answer.stderr


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_summary_names_a_real_command(name: str):
    command = LazyGroup.get_command(cli, None, name)  # type: ignore[arg-type]
    assert command is not None and command.name == name
