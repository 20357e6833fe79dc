"""`distill groups RUN`: the token groups of a run as a tree, with each group's most typical tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from distill.errors import DistillError


def _lines(data: dict, show: int) -> list[str]:
    """Text lines of the tree: nested groups under their parent, or one flat list per level."""
    levels = data["levels"]

    def describe(g: dict) -> str:
        words = g.get("typical") or g["tokens"]
        return f"{g['name']} ({g['size']}): {' '.join(words[:show])}"

    nested = all(g.get("parent") for lv in levels[1:] for g in lv["groups"])
    header = [f"{data['source']} groups; levels: " + ", ".join(
        f"prefix {lv['prefix']} ({len(lv['groups'])} groups"
        + (f", gap {lv['gap']:.3f}" if "gap" in lv else "") + ")" for lv in levels)]
    if not nested:
        out = header
        for lv in levels:
            out.append(f"prefix {lv['prefix']}" + (f" - {lv['name']}" if lv.get("name") else ""))
            out += [f"  {describe(g)}" for g in lv["groups"]]
        return out
    out = header

    def walk(depth: int, parent: str | None) -> None:
        if depth == len(levels):
            return
        for g in levels[depth]["groups"]:
            if depth == 0 or g.get("parent") == parent:
                out.append(f"{'  ' * depth}[{levels[depth]['prefix']}] {describe(g)}")
                walk(depth + 1, g["name"])

    walk(0, None)
    return out


def groups_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder trained with --groups or --emergent.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the tree as JSON "
                                             "(default: RUN/groups-tree.json).")] = None,
    top: Annotated[int, typer.Option(help="Typical tokens listed per group.")] = 8,
) -> None:
    """Print the run's token groups as a tree (each group's most typical tokens) and write it as JSON."""
    from distill.hierarchy.session import GROUPS_NAME
    from distill.hierarchy.tree import Hierarchy
    from distill.students import StaticStudent, load_student

    path = run_dir / GROUPS_NAME
    hierarchy = Hierarchy.load(path)
    saved = json.loads(path.read_text())
    strings = {int(i): t for lv in saved["levels"] for g in lv["groups"] for i, t in zip(g["ids"], g["tokens"])}
    vectors = None
    if (run_dir / "student").is_dir():  # typical tokens by the trained student's rows at each prefix
        student = load_student(run_dir)
        if isinstance(student, StaticStudent):
            vectors = student.embedding.detach().float().cpu().numpy()
    data = hierarchy.to_json(strings, vectors=vectors, top=top)
    if vectors is None:  # no student: keep the typical tokens saved at the end of training
        for lv, old in zip(data["levels"], saved["levels"]):
            for g, og in zip(lv["groups"], old["groups"]):
                if "typical" in og:
                    g["typical"] = og["typical"][:top]
    if not data["levels"]:
        raise DistillError(f"{path} holds no levels")
    for line in _lines(data, top):
        typer.echo(line)
    out = out or run_dir / "groups-tree.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    typer.echo(f"wrote {out}")
