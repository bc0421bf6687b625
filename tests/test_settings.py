"""One settings model per service (core/settings.py): the flags, env vars and docs tables come from it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import REPO_ROOT
from cryptoviz.cli import SUBCOMMANDS, cli
from cryptoviz.core.settings import (
    DOCS_START,
    CommaList,
    ServiceSettings,
    SettingOption,
    click_options,
    describe,
    env_for,
    env_name,
    flag_name,
    from_env,
    from_options,
    named,
    options,
    setting,
    settings_markdown,
    synced,
)
from cryptoviz.ingester.settings import IngestSettings
from pydantic import DirectoryPath, SecretStr, ValidationError
from support.settings import COMMAND_MODELS, ENV_ONLY_MODELS, GLOBAL, RUN_MODES, model

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


class Example(ServiceSettings):
    port: int = setting(8000, "A port.", ge=0, le=65535)
    ratio: float = setting(0.5, "A ratio.", gt=0, lt=1)
    mode: str | None = setting(None, "Free text.", env="EXAMPLE_MODE", flag="--the-mode")
    secret: SecretStr | None = setting(None, "Never shown.")
    loud: bool = setting(False, "A switch.")
    names: CommaList = setting((), "Some names.")


@click.command()
@click_options(Example)
def example(**values: object) -> None:
    click.echo(repr(from_options(Example, values)))


def run(*args: str, **env: str) -> click.testing.Result:
    return CliRunner().invoke(example, list(args), env=env)


def test_a_field_is_a_flag_and_an_env_var_of_the_same_name() -> None:
    assert "port=8000" in run().output
    assert "port=1234" in run("--port", "1234").output
    assert "port=4321" in run(PORT="4321").output
    assert "mode='x'" in run(EXAMPLE_MODE="x").output and "mode='y'" in run("--the-mode", "y").output
    assert "loud=True" in run("--loud").output and "loud=True" in run(LOUD="1").output
    assert "port=8000" in run(PORT="").output  # an empty variable is unset, as click has it


def test_a_list_setting_is_comma_separated_text(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "names=()" in run().output and "names=()" in run("--names", "").output
    assert "names=('a', 'b')" in run("--names", " a,,b ").output and "names=('c',)" in run(NAMES="c").output
    monkeypatch.setenv("NAMES", "x, y")  # pydantic-settings alone would read it as JSON
    assert Example().names == ("x", "y") and Example(names=("z",)).names == ("z",)
    assert "| `NAMES` | `--names` | – |  | Some names. |" in settings_markdown(Example)


def test_from_env_reads_the_given_mapping_and_not_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("RATIO", "0.9")
    settings = from_env(Example, {"port": "2", "EXAMPLE_MODE": "m", "LOUD": "", "NAMES": "a,b"})
    assert (settings.port, settings.ratio, settings.mode, settings.loud, settings.names) == (
        2,
        0.5,
        "m",
        False,
        ("a", "b"),
    )


def test_ranges_are_checked_and_named_by_env_var_and_flag() -> None:
    bad = run("--port", "70000")
    assert bad.exit_code == 2 and "PORT" in bad.output and "0<=x<=65535" in bad.output
    bad = run(RATIO="1")
    assert bad.exit_code == 2 and "RATIO" in bad.output


def test_the_model_check_names_the_setting_click_cannot_see() -> None:
    class Checked(ServiceSettings):
        path: str = setting("a", "Must end in .db")

        def model_post_init(self, _: object) -> None:
            if not self.path.endswith(".db"):
                raise ValueError("must end in .db")

    with pytest.raises(click.BadParameter, match=r"must end in \.db"):
        from_options(Checked, {"path": "x"})
    with pytest.raises(click.BadParameter) as caught:
        from_options(IngestSettings, {"api_port": -1})
    assert caught.value.param_hint == "API_PORT / --api-port"


def test_secrets_are_neither_shown_nor_printed() -> None:
    result = run(SECRET="hunter2-hunter2")
    assert "hunter2" not in result.output and "secret=SecretStr('**********')" in result.output
    assert "hunter2" not in CliRunner().invoke(example, ["--help"], env={"SECRET": "hunter2"}).output


def test_without_the_cli_the_model_reads_the_same_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTER_METRICS_PORT", "9466")
    monkeypatch.setenv("METRICS_PORT", "1")  # the field's name is not its env var
    monkeypatch.setenv("api_port", "8080")  # env vars match case-insensitively
    settings = IngestSettings()
    assert (settings.metrics_port, settings.api_port) == (9466, 8080)
    assert IngestSettings(metrics_port=1).metrics_port == 1  # by field name in code


def test_the_docs_table_says_what_the_flag_says() -> None:
    table = settings_markdown(Example)
    assert "| `PORT` | `--port` | `8000` | 0 … 65535 | A port. |" in table
    assert "| `EXAMPLE_MODE` | `--the-mode` | – |  | Free text. |" in table
    assert "| `LOUD` | `--loud` | off |  | A switch. |" in table
    assert "| `RATIO` | `--ratio` | `0.5` | > 0, < 1 | A ratio. |" in table  # open bounds say so


class Listed(ServiceSettings):
    hosts: CommaList = setting((), "Hosts.")
    tags: CommaList = setting(("a", "b"), "Tags.")
    store: DirectoryPath | None = setting(None, "An existing directory.")


@click.command()
@click_options(Listed)
def listed(**values: object) -> None:
    click.echo(repr(from_options(Listed, values)))


def test_a_list_is_comma_separated_in_its_env_var_and_its_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    def cli(*args: str, **env: str) -> str:
        return CliRunner().invoke(listed, list(args), env=env).output

    assert "hosts=(), tags=('a', 'b')" in cli()
    assert "hosts=('x', 'y:1')" in cli(HOSTS="x, y:1,") and "hosts=('x', 'y:1')" in cli("--hosts", "x,y:1")
    monkeypatch.setenv("HOSTS", "x, y:1")  # pydantic-settings alone would want JSON here
    assert Listed().hosts == ("x", "y:1")
    table = settings_markdown(Listed)
    assert "| `HOSTS` | `--hosts` | – |  | Hosts. |" in table and "| `TAGS` | `--tags` | `a,b` |" in table


def test_a_path_is_a_click_path_and_the_model_checks_it(tmp_path: Path) -> None:
    (option,) = [o for o in options(Listed) if o.name == "store"]
    assert isinstance(option.type, click.Path)
    assert f"store=PosixPath('{tmp_path}')" in CliRunner().invoke(listed, ["--store", str(tmp_path)]).output
    bad = CliRunner().invoke(listed, ["--store", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "STORE / --store" in bad.output and "directory" in bad.output


class EnvOnly(ServiceSettings):
    cli = False
    workers: int = setting(2, "Workers.", ge=1, env="EXAMPLE_WORKERS")


def test_without_a_cli_a_bad_env_var_is_named_and_the_table_has_no_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EnvOnly().workers == 2
    monkeypatch.setenv("EXAMPLE_WORKERS", "0")
    with pytest.raises(ValidationError) as caught:
        EnvOnly()
    assert describe(EnvOnly, caught.value) == "EXAMPLE_WORKERS: Input should be greater than or equal to 1"
    table = settings_markdown(EnvOnly)
    assert table.splitlines()[0] == "| env var | default | allowed | meaning |"
    assert "| `EXAMPLE_WORKERS` | `2` | ≥ 1 | Workers. |" in table


def test_every_docs_settings_table_is_generated_from_its_model() -> None:
    """Run `.venv/bin/python -m cryptoviz.core.settings` after changing a setting."""
    stale = [str(p.relative_to(REPO_ROOT)) for p in DOCS if synced(p.read_text(encoding="utf-8")) != p.read_text()]
    assert not stale, f"out of date: {stale}; run `.venv/bin/python -m cryptoviz.core.settings`"


def test_every_model_has_its_table_in_the_docs() -> None:
    tabled = {f"{m[1]}:{m[2]}" for path in DOCS for m in DOCS_START.finditer(path.read_text(encoding="utf-8"))}
    models = {GLOBAL, *(path for paths in COMMAND_MODELS.values() for path in paths), *ENV_ONLY_MODELS.values()}
    assert models <= tabled, models - tabled
    assert all(model(path).cli for paths in COMMAND_MODELS.values() for path in paths)
    assert not any(model(path).cli for path in ENV_ONLY_MODELS.values())


def _command(name: str) -> click.Command:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    return command


@pytest.mark.parametrize("name", sorted(set(SUBCOMMANDS) - {"config-schema", "check-config"}))
def test_every_option_of_every_command_comes_from_its_models(name: str) -> None:
    skipped = {"help", *RUN_MODES.get(name, ())}
    options = [p for p in _command(name).params if isinstance(p, click.Option) and p.name not in skipped]
    assert options and all(isinstance(p, SettingOption) for p in options), [p.name for p in options]
    expected = {
        (env_name(field_name, field), flag_name(field_name, field))
        for path in COMMAND_MODELS[name]
        for field_name, field in model(path).model_fields.items()
    }
    assert {(p.envvar, p.opts[0]) for p in options} == expected


def test_the_global_flags_come_from_their_model() -> None:
    options = [p for p in cli.params if isinstance(p, click.Option) and p.name not in {"help", "version"}]
    assert all(isinstance(p, SettingOption) for p in options)
    assert {p.envvar for p in options} == {env_name(n, f) for n, f in model(GLOBAL).model_fields.items()}


def test_a_launcher_names_a_childs_settings_by_field_and_an_unknown_one_fails() -> None:
    env = env_for(Example, port=8001, ratio=0.25, mode=Path("/tmp/x"), secret=None)
    assert env == {"PORT": "8001", "RATIO": "0.25", "EXAMPLE_MODE": "/tmp/x"}  # None: left to the child's default
    assert from_env(Example, env).mode == "/tmp/x"
    with pytest.raises(KeyError, match="no setting 'prot'"):
        env_for(Example, prot=8001)
    assert named(Example, "mode") == "--the-mode / EXAMPLE_MODE"
