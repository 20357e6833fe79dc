"""README.md is checked against the CLI: every `distill ...` line it shows parses, every command is listed,
and every field of the run configuration is a `distill run` option or listed as YAML-only, with why.

Nothing here runs a command's work: command lines are resolved through click's introspection of the Typer
app, and the `distill run` options are followed into the RunConfig they build with `run` replaced by a stub.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from distill.cli import app
from distill.hierarchy.config import HierarchyConfig
from distill.pipeline.run import RunConfig
from distill.pipeline.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI = typer.main.get_command(app)
SEPARATORS = {"&&", "||", ";", "|"}
YAML_ONLY_HEADING = "YAML-only options"
OPTION_OF = {"hierarchy.weight": "--hierarchy-weight"}  # fields whose option is not --<leaf-name>


# ---- reading README ---------------------------------------------------------------------------------------
def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)


def inline_spans(text: str) -> list[str]:
    """Inline code spans of the prose; a table's escaped ``\\|`` becomes ``|``."""
    return [s.replace("\\|", "|") for s in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", prose(text))]


def shell_commands(block: str) -> list[list[str]]:
    """The argument lists after ``distill`` (or ``-m distill.cli``) in a shell code block: backslash
    continuations joined, ``$`` prompts and comments dropped, ``&&``/``;``/``|`` chains split."""
    found = []
    for line in re.sub(r"\\\n", " ", block).splitlines():
        line = re.sub(r"^\s*\$\s+", "", line)
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # not shell (an unbalanced quote): nothing to check
            continue
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            if segment and segment[0] == "distill":
                found.append(segment[1:])
            elif "-m" in segment and segment[segment.index("-m") + 1:][:1] == ["distill.cli"]:
                found.append(segment[segment.index("-m") + 2:])
            segment = []
    return found


def readme_commands(text: str) -> list[list[str]]:
    """Every distill command line of a README: its shell code blocks and its inline spans ``distill ...``
    (in spans, ``[`` ``]`` around optional parts are dropped)."""
    found = [args for block in code_blocks(text) for args in shell_commands(block)]
    for span in inline_spans(text):
        if span.startswith("distill "):
            found.append(span.replace("[", " ").replace("]", " ").split()[1:])
    return found


def options(command) -> set[str]:
    """The option names a click command takes (typer may vendor its own click: duck-typed)."""
    names = {"--help"}
    for param in command.params:
        if getattr(param, "param_type_name", None) == "option":
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _is_flag(token: str) -> bool:
    return bool(re.match(r"^--?[A-Za-z]", token))


def problems(args: list[str], root=CLI) -> list[str]:
    """What is wrong with ``distill ARGS``: an unknown (sub)command, or a flag its command does not take.

    A word that is not a subcommand where one is expected is a placeholder when it is in capitals
    (``distill COMMAND --help``), an unknown command otherwise.
    """
    line = " ".join(["distill", *args])
    command, path, found = root, "distill", []
    for token in args:
        if _is_flag(token):
            flag = token.split("=", 1)[0]
            if flag not in options(command):
                found.append(f"{line}: `{path}` takes no {flag}")
        elif hasattr(command, "commands"):  # a group: the word names a subcommand
            if token in command.commands:
                command, path = command.commands[token], f"{path} {token}"
            elif token.isupper():
                command = None  # a placeholder command: its flags cannot be checked
                break
            else:
                found.append(f"{line}: `{path}` has no command {token!r}")
                break
    return found


def readme_problems(text: str) -> list[str]:
    found = [p for args in readme_commands(text) for p in problems(args)]
    every_option = set().union(*(options(c) for c in all_commands()))
    for span in inline_spans(text):  # prose that names a flag: `--metric cos`
        flag = span.split()[0].split("=", 1)[0]
        if re.match(r"^--[a-z]", flag) and flag not in every_option:
            found.append(f"`{span}`: no distill command takes {flag}")
    return found


def all_commands(command=CLI) -> list:
    out = [command]
    for sub in getattr(command, "commands", {}).values():
        out += all_commands(sub)
    return out


def section(text: str, heading: str) -> str:
    """The body of the section whose heading is ``heading`` (up to the next heading of its level or above)."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, flags=re.M)
    assert match, f"README has no section {heading!r}"
    level = len(match.group(1))
    rest = text[match.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[:end.start()] if end else rest


def yaml_only_fields(text: str) -> dict[str, str]:
    """Field -> why, from the first column of the YAML-only table (one or more `train.mse` per row)."""
    rows = [r for r in section(text, YAML_ONLY_HEADING).splitlines() if r.startswith("|")]
    out = {}
    for row in rows[2:]:  # header and separator first
        cells = [c.strip() for c in row.strip("|").split("|")]
        for name in re.findall(r"`([a-z_.]+)`", cells[0]):
            out[name] = cells[-1]
    return out


# ---- the configuration --------------------------------------------------------------------------------------
def config_fields() -> dict[str, object]:
    """Every leaf field of RunConfig (``train.*``, ``hierarchy.*`` nested) -> its default."""
    def default(f):
        return f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)

    out = {}
    for f in fields(RunConfig):
        nested = {"train": TrainConfig, "hierarchy": HierarchyConfig}.get(f.name)
        if nested is None:
            out[f.name] = default(f)
        else:
            out.update({f"{f.name}.{g.name}": default(g) for g in fields(nested)})
    return out


def option_of(field: str) -> str:
    return OPTION_OF.get(field, "--" + field.split(".")[-1].replace("_", "-"))


def run_options() -> set[str]:
    return options(CLI.commands["run"])


# a value for each `distill run` option, unlike its default: (arguments, the field's expected value)
SAMPLES: dict[str, tuple[list[str], object]] = {
    "teacher": (["--teacher", "some-teacher"], "some-teacher"),
    "corpus": (["--corpus", "texts.txt"], "texts.txt"),
    "text_column": (["--text-column", "body"], "body"),
    "limit": (["--limit", "11"], 11),
    "student": (["--student", "transformer"], "transformer"),
    "dims": (["--dims", "8,16"], (8, 16)),
    "holdout": (["--holdout", "5"], 5),
    "sts": (["--sts", "pairs.csv"], "pairs.csv"),
    "retrieval": (["--retrieval", "nfcorpus"], "nfcorpus"),
    "retrieval_split": (["--retrieval-split", "dev"], "dev"),
    "targets_dir": (["--targets-dir", "cache"], "cache"),
    "pooling": (["--pooling", "cls"], "cls"),
    "layer": (["--layer", "-2"], -2),
    "max_length": (["--max-length", "17"], 17),
    "prompt": (["--prompt", "query"], "query"),
    "teacher_batch_size": (["--teacher-batch-size", "19"], 19),
    "teacher_dtype": (["--teacher-dtype", "float16"], "float16"),
    "pca_center": (["--pca-center"], True),
    "whiten": (["--whiten"], True),
    "width": (["--width", "64"], 64),
    "n_layers": (["--n-layers", "3"], 3),
    "n_heads": (["--n-heads", "8"], 8),
    "token_targets": (["--no-token-targets"], False),
    "device": (["--device", "cpu"], "cpu"),
    "tokenizer": (["--tokenizer", "char"], "char"),
    "token_weights": (["--token-weights", "bm25"], "bm25"),
    "hierarchy.emergent": (["--emergent"], True),
    "hierarchy.weight": (["--hierarchy-weight", "0.25"], 0.25),
    "hierarchy.branching": (["--branching", "2,3"], (2, 3)),
    "hierarchy.refresh_every": (["--refresh-every", "5"], 5),
    "train.epochs": (["--epochs", "7"], 7),
    "train.batch_size": (["--batch-size", "3"], 3),
    "train.lr": (["--lr", "0.5"], 0.5),
    "train.seed": (["--seed", "9"], 9),
    "train.checkpoint_every": (["--checkpoint-every", "13"], 13),
    "train.dim_weights": (["--dim-weights", "1,0.5"], (1.0, 0.5)),
    "train.grad_accum": (["--grad-accum", "2"], 2),
    "train.warmup_ratio": (["--warmup-ratio", "0.1"], 0.1),
    "train.weight_decay": (["--weight-decay", "0.01"], 0.01),
    "train.clip": (["--clip", "0.5"], 0.5),
    "train.log_every": (["--log-every", "4"], 4),
    "train.grow_at": (["--grow-at", "0.5,300"], (0.5, 300.0)),  # SAMPLES builds a transformer student: it can grow
}
# options that go in a command line of their own, with the arguments they need there
APART = [({"hierarchy.groups": (["--groups", "groups.yaml"], "groups.yaml")}, []),  # excludes --emergent
         ({"depth": (["--depth", "3"], 3), "layers": (["--layers", "0,2"], (0, 2))}, ["--student", "layers"]),
         ({"merge": (["--merge", "2"], 2), "merge_after": (["--merge-after", "2"], 2)}, ["--student", "conv"]),
         # static students only (SAMPLES has --student transformer)
         ({"vocab_from_corpus": (["--vocab-from-corpus", "500"], 500)}, [])]
# a value for each YAML-only field, unlike its default
YAML_SAMPLES = {"train.mse": 0.5, "train.cosine": 0.5, "train.relational": 0.5, "train.token": 0.5,
                "hierarchy.temperature": 0.2, "hierarchy.min_size": 4, "hierarchy.threshold": 0.9,
                "hierarchy.max_tokens": 100, "hierarchy.sample": 64}


def value_of(cfg: RunConfig, field: str):
    for part in field.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.fixture
def built(monkeypatch, tmp_path):
    """``built(args)``: the RunConfig that ``distill run ARGS`` would run (nothing is run)."""
    import distill.pipeline.run as run_module

    seen = []
    monkeypatch.setattr(run_module, "run", lambda cfg, resume=False, until="export": seen.append(cfg) or {})

    def build(args: list[str]) -> RunConfig:
        result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "run"), *args])
        assert result.exit_code == 0, result.output
        return seen.pop()

    return build


# ---- the tests ---------------------------------------------------------------------------------------------
def test_every_distill_line_of_the_readme_parses():
    text = README.read_text()
    assert len(readme_commands(text)) >= 20  # the extraction finds the README's command lines
    assert readme_problems(text) == []


def test_the_checker_finds_a_flag_or_command_that_does_not_exist():
    bad = ("```bash\n$ distill run --corpus docs.txt \\\n    --no-such-flag 3   # a comment --not-checked\n"
           "pip install x && distill index build --model m --frobnicate\ndistill sing --loud\n```\n"
           "Prose: `distill export RUN --fromat onnx`, `--teacher-dtyp float32`; fine: `distill COMMAND --help`.\n")
    assert readme_problems(bad) == [
        "distill run --corpus docs.txt --no-such-flag 3: `distill run` takes no --no-such-flag",
        "distill index build --model m --frobnicate: `distill index build` takes no --frobnicate",
        "distill sing --loud: `distill` has no command 'sing'",
        "distill export RUN --fromat onnx: `distill export` takes no --fromat",
        "`--teacher-dtyp float32`: no distill command takes --teacher-dtyp",
    ]
    good = "```bash\nacclerate launch --num_processes 2 -m distill.cli run --corpus c.txt --out o\n```\n"
    assert readme_commands(good) == [["run", "--corpus", "c.txt", "--out", "o"]] and readme_problems(good) == []


def test_every_command_is_in_the_readme_commands_section():
    commands = section(README.read_text(), "Commands")
    for name, command in CLI.commands.items():
        assert f"`distill {name}" in commands, f"`distill {name}` is missing from README's Commands section"
        for sub in getattr(command, "commands", {}):
            assert re.search(rf"\b{sub}\b", commands), f"`distill {name} {sub}` is missing from README's Commands"


def test_every_config_field_is_a_run_option_or_yaml_only_with_why():
    yaml_only = yaml_only_fields(README.read_text())
    assert len(yaml_only) >= 5
    assert set(yaml_only) <= set(config_fields()), "README's YAML-only table names fields RunConfig does not have"
    for field in config_fields():
        flag = option_of(field)
        if field in yaml_only:
            assert flag not in run_options(), f"{field} is YAML-only in README but `distill run` takes {flag}"
            assert len(yaml_only[field].split()) >= 3, f"README's YAML-only table does not say why for {field}"
        else:
            assert flag in run_options(), (f"{field}: add a `distill run` option {flag}, or list it in README's "
                                           f"{YAML_ONLY_HEADING!r} table with why")


def test_every_run_option_reaches_its_field(built):
    defaults = config_fields()
    flagged = {f for f in defaults if option_of(f) in run_options() and f != "out"}
    sampled = set(SAMPLES).union(*(group for group, _ in APART))
    assert flagged <= sampled, f"add sample values for {sorted(flagged - sampled)}"
    for group, extra in [(SAMPLES, []), *APART]:
        group = {f: v for f, v in group.items() if f in flagged}
        cfg = built([*extra, *(a for args, _ in group.values() for a in args)])
        for field, (_, expected) in group.items():
            assert expected != defaults[field], f"the sample of {field} is its default: it proves nothing"
            assert value_of(cfg, field) == expected, field


def test_yaml_only_fields_reach_the_config_and_flags_win(built, tmp_path):
    yaml_only = yaml_only_fields(README.read_text())
    assert set(yaml_only) <= set(YAML_SAMPLES), f"add YAML samples for {sorted(set(yaml_only) - set(YAML_SAMPLES))}"
    options: dict = {"train": {"epochs": 2}}
    for field in yaml_only:
        part, _, name = field.rpartition(".")
        (options.setdefault(part, {}) if part else options)[name] = YAML_SAMPLES[field]
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(options))  # JSON is YAML
    cfg = built(["--config", str(path), "--epochs", "5"])
    for field in yaml_only:
        assert value_of(cfg, field) == YAML_SAMPLES[field] != config_fields()[field], field
    assert cfg.train.epochs == 5


def test_a_config_of_an_older_run_with_train_cpu_still_loads(tmp_path, caplog):
    from distill.pipeline.run import load_config

    (tmp_path / "config.json").write_text(json.dumps({"out": str(tmp_path), "train": {"cpu": True, "epochs": 2}}))
    cfg = load_config(tmp_path)
    assert cfg.device == "cpu" and cfg.train.epochs == 2
    assert "cpu" not in {f.name for f in fields(TrainConfig)}
    assert "no longer used" in caplog.text
    assert RunConfig.from_dict({"out": "o", "device": "cuda", "train": {"cpu": True}}).device == "cuda"


@pytest.mark.parametrize(("args", "message"), [
    (["--dims", "8,16", "--dim-weights", "1,2,3"], "3 dim weights for 2 prefix sizes"),
    (["--dim-weights", "1,x"], "--dim-weights takes comma-separated numbers"),
    (["--student", "transformer", "--width", "30", "--n-heads", "4"], "4 attention heads do not divide the width 30"),
])
def test_bad_run_options_are_one_line_errors(args, message, tmp_path):
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_bad_training_options_from_a_config_file_are_refused():
    from distill.errors import DistillError

    for train, message in (({"grad_accum": 0}, "grad_accum must be at least 1"),
                           ({"warmup_ratio": 1.5}, "warmup_ratio must be within 0..1"),
                           ({"clip": -1}, "clip must not be negative")):
        with pytest.raises(DistillError, match=message):
            RunConfig.from_dict({"out": "o", "train": train})


# ---- docs ---------------------------------------------------------------------------------------------------
def test_readme_links_the_design_notes_of_this_repository():
    text = README.read_text()
    for doc in ("docs/design.md", "docs/hierarchy.md"):
        assert f"({doc})" in text and (ROOT / doc).is_file()
    assert "../shared/DESIGN.md" not in text
    users = text[:text.index("\n## Developing")]
    assert "../shared" not in users and "shared/" not in users, "README's user sections mention ../shared"


# the layers of docs/design.md, bottom up: a module imports only from its own layer or those below it
LAYERS = [
    {"errors", "faults", "io", "devices", "hub", "memory", "cli_utils", "vectors"},
    {"teachers"},
    {"students"},
    {"index"},
    {"hierarchy"},
    {"pipeline"},
    {"models"},
    {"report", "service"},
]
TOP = {"cli", "index_cli", "__init__", "pipeline/run", "pipeline/cli", "report/cli", "service/cli", "hierarchy/cli"}


def _unit(path: Path) -> str:
    rel = path.relative_to(ROOT / "distill").with_suffix("")
    name = "/".join(rel.parts)
    if name in TOP or rel.parts[0] in TOP:
        return name
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_lower_layers_never_import_upper_ones():
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    found = []
    for path in sorted((ROOT / "distill").rglob("*.py")):
        unit = _unit(path)
        if unit in TOP:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                parts = name.split(".")
                if parts[0] != "distill" or len(parts) < 2:
                    continue
                if "/".join(parts[1:3]) in TOP or parts[1] in TOP or level[parts[1]] > level[unit]:
                    found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []
    units = {p.stem if p.is_file() else p.name for p in (ROOT / "distill").iterdir()
             if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert units - TOP <= set(level), f"give {sorted(units - TOP - set(level))} a layer in docs/design.md and here"


# ---- the shape of the code (issue 22): what keeps a newcomer's reading short -----------------------------------
def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring left out."""
    body = node.body
    first = body[1] if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        else body[0]
    return node.end_lineno - first.lineno + 1


def test_no_module_past_450_lines_and_no_function_body_past_60():
    long = []
    for path in sorted((ROOT / "distill").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 450:
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: a {_body_lines(node)}-line body")
    assert long == []


def test_ruff_is_clean_with_the_complexity_rule_at_12():
    import subprocess
    import sys

    settings = (ROOT / "pyproject.toml").read_text()
    assert '"C901"' in settings and "max-complexity = 12" in settings
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "distill", "bench", "tests", "scripts"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
