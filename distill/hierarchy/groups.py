"""Imposed token groups: a YAML file of levels, each tied to a prefix size, each mapping group names
to tokens or to rules.

.. code-block:: yaml

    levels:
      - name: kind              # optional
        prefix: 32              # one of the student's prefix sizes (dims)
        groups:
          vowels: {class: vowels}
          consonants: {class: consonants}
          digits: ["0", "1", "2", "3"]               # tokens, spelled as the tokenizer spells them
          pieces: {regex: "^##"}                     # re.search on the token string
          capitals: {class: [upper, word_initial]}   # every class listed must hold
          mixed: {tokens: [x, y], class: digits}     # listed tokens plus those the rules match

Classes look at a token's surface (the token without a ``##`` continuation mark): ``vowels``,
``consonants``, ``letters``, ``digits``, ``punctuation`` (Unicode punctuation and symbols),
``upper`` (first letter a capital), ``lower``, ``word_initial`` and ``continuation`` (WordPiece ``##`` pieces). Within a
level the groups must not share tokens. Every error names the file and line.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from distill.errors import DistillError
from distill.hierarchy.tree import Group, Hierarchy, Level

_VOWELS = set("aeiou")


def _surface(token: str) -> str:
    return token[2:] if token.startswith("##") and len(token) > 2 else token


def _base(c: str) -> str:
    """The letter without its accents: é -> e."""
    return unicodedata.normalize("NFD", c)[0].lower()


def _all(pred: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda t: bool(_surface(t)) and all(pred(c) for c in _surface(t))


CLASSES: dict[str, Callable[[str], bool]] = {
    "vowels": _all(lambda c: c.isalpha() and _base(c) in _VOWELS),
    "consonants": _all(lambda c: c.isalpha() and _base(c) not in _VOWELS),
    "letters": _all(str.isalpha),
    "digits": _all(str.isdigit),
    "punctuation": _all(lambda c: unicodedata.category(c)[0] in "PS"),
    "upper": lambda t: _surface(t)[:1].isupper(),  # capitalized: A, The
    "lower": lambda t: _surface(t).islower(),
    "word_initial": lambda t: not (t.startswith("##") and len(t) > 2),
    "continuation": lambda t: t.startswith("##") and len(t) > 2,
}


class GroupsFileError(DistillError):
    """A groups file that cannot be used; the message names the file and line."""


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _scalars(node: Node, where: str, fail) -> list[tuple[str, int]]:
    """A scalar or a list of scalars -> [(value, line)]."""
    if isinstance(node, ScalarNode):
        return [(node.value, _line(node))]
    if isinstance(node, SequenceNode) and all(isinstance(n, ScalarNode) for n in node.value):
        return [(n.value, _line(n)) for n in node.value]
    fail(node, f"{where} must be a string or a list of strings")
    return []


def _mapping(node: Node) -> dict[str, tuple[Node, Node]]:
    return {k.value: (k, v) for k, v in node.value}


def parse_groups(text: str, vocab: Mapping[str, int], dims: Sequence[int], source: str = "groups file") -> Hierarchy:
    """Parse an imposed-groups YAML text against a vocabulary.

    :param vocab: token string -> id of the tokens that may be grouped (those with teacher targets).
    :param dims: the student's prefix sizes; every level must be tied to one of them.
    :raises GroupsFileError: naming ``source`` and the line of the first problem.
    """

    def fail(node: Node | None, message: str):
        where = f"{source} line {_line(node)}" if node is not None else source
        raise GroupsFileError(f"{where}: {message}")

    levels_node = _levels_node(_compose(text, source), fail)
    seen_prefix: dict[int, int] = {}  # prefix -> line of the level that has it
    levels = [_parse_level(n, node, vocab, dims, seen_prefix, fail)
              for n, node in enumerate(levels_node.value, start=1)]
    levels.sort(key=lambda lv: lv.prefix)
    return Hierarchy(levels, "imposed", {"file": source})


def _compose(text: str, source: str) -> Node | None:
    try:
        return yaml.compose(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise GroupsFileError(f"{source}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None


def _levels_node(root: Node | None, fail) -> SequenceNode:
    """The list of levels: the document itself, or its top-level ``levels:``."""
    if root is None:
        fail(None, "is empty; it needs a list of levels")
    levels_node = root
    if isinstance(root, MappingNode):
        keys = _mapping(root)
        if "levels" not in keys:
            fail(root, "needs a top-level `levels:` list")
        levels_node = keys["levels"][1]
    if not isinstance(levels_node, SequenceNode) or not levels_node.value:
        fail(levels_node, "`levels` must be a non-empty list of levels")
    return levels_node


def _parse_level(n: int, level_node: Node, vocab: Mapping[str, int], dims: Sequence[int],
                 seen_prefix: dict[int, int], fail) -> Level:
    if not isinstance(level_node, MappingNode):
        fail(level_node, f"level {n} must be a mapping with `prefix` and `groups`")
    keys = _mapping(level_node)
    name = keys["name"][1].value if "name" in keys and isinstance(keys["name"][1], ScalarNode) else f"level {n}"
    for key, (k, _) in keys.items():
        if key not in ("name", "prefix", "groups"):
            fail(k, f"level {name!r}: unknown key {key!r} (use name, prefix, groups)")
    if "prefix" not in keys:
        fail(level_node, f"level {name!r} has no prefix: add `prefix: <size>` "
                         f"(one of the student's dims {', '.join(map(str, dims))})")
    prefix = _level_prefix(name, keys["prefix"][1], dims, seen_prefix, fail)
    if "groups" not in keys or not isinstance(keys["groups"][1], MappingNode):
        fail(level_node, f"level {name!r} needs `groups:`, a mapping from group name to tokens or a rule")
    return Level(prefix, _level_groups(name, keys["groups"][1], vocab, fail), name)


def _level_prefix(name: str, prefix_node: Node, dims: Sequence[int], seen_prefix: dict[int, int], fail) -> int:
    try:
        prefix = int(prefix_node.value)
    except (TypeError, ValueError):
        fail(prefix_node, f"level {name!r}: prefix must be an integer, got {prefix_node.value!r}")
    if prefix not in dims:
        fail(prefix_node, f"level {name!r}: prefix {prefix} is not one of the student's dims "
                          f"{', '.join(map(str, dims))}")
    if prefix in seen_prefix:
        fail(prefix_node, f"level {name!r}: prefix {prefix} already has a level (line {seen_prefix[prefix]})")
    seen_prefix[prefix] = _line(prefix_node)
    return prefix


def _level_groups(name: str, groups_node: MappingNode, vocab: Mapping[str, int], fail) -> list[Group]:
    """The groups of one level: at least two, each of at least two tokens, no token in two of them."""
    if len(groups_node.value) < 2:
        fail(groups_node, f"level {name!r} has {len(groups_node.value)} group; it needs at least 2 to set apart")
    owner: dict[int, tuple[str, int]] = {}
    groups = []
    for key_node, value_node in groups_node.value:
        gname = key_node.value
        ids = _resolve(gname, value_node, vocab, fail)
        if len(ids) < 2:
            fail(key_node, f"group {gname!r} of level {name!r} has {len(ids)} member"
                           f"{'' if len(ids) == 1 else 's'}; a group needs at least 2")
        for i in ids:
            if i in owner:
                other, line = owner[i]
                token = next(t for t, j in vocab.items() if j == i)
                fail(key_node, f"token {token!r} is in group {gname!r} and in group {other!r} (line {line}) "
                               f"of level {name!r}; groups of one level must not overlap")
            owner[i] = (gname, _line(key_node))
        groups.append(Group(gname, ids))
    return groups


def _resolve(gname: str, node: Node, vocab: Mapping[str, int], fail) -> list[int]:
    """One group's value (a token list, or a mapping of tokens / regex / class) -> sorted token ids."""
    listed, rules = _group_rules(gname, node, fail) if isinstance(node, MappingNode) else (
        _scalars(node, f"group {gname!r}", fail), [])
    ids: set[int] = set()
    for token, line in listed:
        if token not in vocab:
            fail(_At(line), f"unknown token {token!r} in group {gname!r} (not in the student's vocabulary)")
        ids.add(vocab[token])
    if rules:
        ids |= {i for t, i in vocab.items() if all(rule(t) for rule in rules)}
    return sorted(ids)


def _group_rules(gname: str, node: MappingNode, fail) -> tuple[list[tuple[str, int]], list[Callable[[str], bool]]]:
    """A group given as a mapping: its listed tokens (with their lines) and the rules a token must pass."""
    listed: list[tuple[str, int]] = []
    rules: list[Callable[[str], bool]] = []
    for key, (k, v) in _mapping(node).items():
        if key == "tokens":
            listed += _scalars(v, f"group {gname!r}: tokens", fail)
        elif key == "regex":
            for pattern, line in _scalars(v, f"group {gname!r}: regex", fail):
                try:
                    rules.append(re.compile(pattern).search)
                except re.error as e:
                    fail(_At(line), f"group {gname!r}: bad regex {pattern!r} ({e})")
        elif key == "class":
            for cls, _ in _scalars(v, f"group {gname!r}: class", fail):
                if cls not in CLASSES:
                    fail(v, f"group {gname!r}: unknown class {cls!r} (use {', '.join(CLASSES)})")
                rules.append(CLASSES[cls])
        else:
            fail(k, f"group {gname!r}: unknown key {key!r} (use tokens, regex, class)")
    return listed, rules


class _At:
    """A stand-in node that only knows its line, for errors on one item of a flow list."""

    def __init__(self, line: int):
        self.start_mark = type("Mark", (), {"line": line - 1})()


def load_groups(path: str | Path, vocab: Mapping[str, int], dims: Sequence[int]) -> Hierarchy:
    """Read and parse an imposed-groups file; see :func:`parse_groups`."""
    path = Path(path)
    if not path.is_file():
        raise GroupsFileError(f"groups file {path} does not exist")
    return parse_groups(path.read_text(encoding="utf-8"), vocab, dims, source=str(path))
