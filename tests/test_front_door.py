"""What a new user meets first: help that fits a terminal, errors that say what works, no debris."""

from __future__ import annotations

import subprocess
import sys
import time

import click
import pytest
import typer
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DistillError
from distill.pipeline.cli import speedup_text
from distill.pipeline.run import RunConfig, run

runner = CliRunner()


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_every_option_of_every_command_shows_its_whole_name_at_80_columns():
    root = typer.main.get_command(app)
    checked = 0
    for path, command in _commands(root):
        r = runner.invoke(app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
        assert r.exit_code == 0, r.output
        assert max(len(line) for line in r.output.splitlines()) <= 80, f"distill {' '.join(path)} --help is too wide"
        for param in command.params:
            for name in param.opts + param.secondary_opts:
                if name.startswith("-"):
                    assert name in r.output, f"distill {' '.join(path)} --help does not show {name} whole"
                    checked += 1
    assert checked > 120  # every command was looked at, not a handful


def test_unknown_teacher_offline_names_what_loads_offline(monkeypatch):
    from distill.teachers import registry

    monkeypatch.setattr(registry, "hub_reachable", lambda: False)
    with pytest.raises(DistillError) as e:
        registry.resolve_teacher("bert-base")
    message = str(e.value)
    offline = [r["alias"] for r in registry.list_teachers() if r["offline"]]
    assert "minilm" in offline and f"loads offline now ({', '.join(offline)};" in message
    assert "bert-large" not in message  # the aliases that need a download are not offered as offline ones


def test_a_run_that_fails_before_its_first_stage_leaves_no_folder(tmp_path, monkeypatch, tiny_corpus):
    from distill.teachers import registry

    monkeypatch.setattr(registry, "hub_reachable", lambda: False)
    out = tmp_path / "runs" / "bert-base-static"
    with pytest.raises(DistillError, match="not found"):
        run(RunConfig(out=str(out), teacher="bert-base", corpus=str(tiny_corpus), holdout=20,
                      targets_dir=str(tmp_path / "targets")))
    assert not out.exists()


def test_a_failed_resume_keeps_the_folder_it_did_not_create(tmp_path, monkeypatch, tiny_corpus):
    from distill.teachers import registry

    monkeypatch.setattr(registry, "hub_reachable", lambda: False)
    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "keep.txt").write_text("the user's file")
    with pytest.raises(DistillError):
        run(RunConfig(out=str(out), teacher="bert-base", corpus=str(tiny_corpus), holdout=20,
                      targets_dir=str(tmp_path / "targets")))
    assert (out / "notes" / "keep.txt").read_text() == "the user's file"


def test_an_unknown_student_is_refused_at_once_with_no_folder(tmp_path):
    t = time.perf_counter()
    r = runner.invoke(app, ["run", "--student", "nonsense", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "unknown student 'nonsense' (choose from static, transformer, layers, conv)" in r.output
    assert time.perf_counter() - t < 10 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("ratio, text", [(160.4, "160x"), (3.44, "3.4x"), (0.33, "0.33x"), (1.0, "1x"), (10.0, "10x")])
def test_speedups_below_one_do_not_read_as_zero(ratio, text):
    assert speedup_text(ratio) == text


def test_run_options_are_data_checked_without_torch():
    """The config module builds and checks a run's options without importing torch; its student kinds are
    the students the registry can build."""
    code = ("import sys\n"
            "from distill.pipeline.config import RunConfig, StudentKind\n"
            "cfg = RunConfig(out='x', student='layers')\n"
            "assert cfg.student is StudentKind.LAYERS and cfg.student.derived and cfg.student.token_states\n"
            "assert 'torch' not in sys.modules, 'the config imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from distill.pipeline.config import StudentKind
    from distill.students import STUDENTS

    assert [k.value for k in StudentKind] == list(STUDENTS)
