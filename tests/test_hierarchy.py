"""Token hierarchies: imposed groups (parsing, errors, the loss), emergent groups (planted tree
recovered), character-level runs and `distill groups`."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from distill.hierarchy import GroupsFileError, HierarchyConfig, cohesion, emergent_hierarchy, parse_groups
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig
from distill.students.losses import HierarchyLoss

VOCAB = {t: i for i, t in enumerate(["a", "e", "i", "o", "b", "c", "d", "k", "1", "2", "3", "##a", "##b",
                                     ".", ",", "!", "The", "Cat", "dog"])}
DIMS = [8, 16, 32]


# ---- imposed groups: the file format -----------------------------------------------------------------------
def test_rules_and_lists_resolve_to_tokens():
    text = """levels:
  - name: kind
    prefix: 8
    groups:
      vowels: {class: vowels}
      consonants: {class: [consonants, word_initial]}
      digits: {regex: "^[0-9]$"}
      marks: [".", ",", "!"]
  - prefix: 16
    groups:
      pieces: {class: continuation}
      capitals: {class: upper, tokens: [dog]}
"""
    h = parse_groups(text, VOCAB, DIMS)
    assert [lv.prefix for lv in h.levels] == [8, 16]
    names = {g.name: sorted(t for t, i in VOCAB.items() if i in g.ids) for g in h.levels[0].groups}
    assert names == {"vowels": ["##a", "a", "e", "i", "o"], "consonants": ["b", "c", "d", "k"],
                     "digits": ["1", "2", "3"], "marks": ["!", ",", "."]}
    second = {g.name: sorted(t for t, i in VOCAB.items() if i in g.ids) for g in h.levels[1].groups}
    assert second == {"pieces": ["##a", "##b"], "capitals": ["Cat", "The", "dog"]}


@pytest.mark.parametrize("text, match", [
    ("levels:\n  - prefix: 8\n    groups:\n      v: [a, e]\n      w: [b, zz]\n",
     r"line 5: unknown token 'zz' in group 'w'"),
    ("levels:\n  - prefix: 8\n    groups:\n      v: [a, e]\n      w: [b]\n",
     r"line 5: group 'w' of level 'level 1' has 1 member; a group needs at least 2"),
    ("levels:\n  - prefix: 8\n    groups:\n      v: [a, e]\n      w: [b, c]\n  - name: fine\n    groups:\n"
     "      x: [a, e]\n      y: [b, c]\n", r"line 6: level 'fine' has no prefix"),
    ("levels:\n  - prefix: 12\n    groups:\n      v: [a, e]\n      w: [b, c]\n",
     r"line 2: level 'level 1': prefix 12 is not one of the student's dims 8, 16, 32"),
    ("levels:\n  - prefix: 8\n    groups:\n      v: {class: vowels}\n      w: [a, b]\n",
     r"line 5: token 'a' is in group 'w' and in group 'v' \(line 4\)"),
    ("levels:\n  - prefix: 8\n    groups:\n      v: {class: vowel}\n      w: [b, c]\n",
     r"line 4: group 'v': unknown class 'vowel'"),
    ("levels:\n  - prefix: 8\n    groups:\n      v: [a, e]\n", r"line 4: level 'level 1' has 1 group"),
    ("levels:\n  - prefix: 8\n    groups: [a, e\n", r"line \d+: not valid YAML"),
    ("", "is empty"),
])
def test_bad_group_files_are_refused_naming_the_line(text, match):
    with pytest.raises(GroupsFileError, match=match):
        parse_groups(text, VOCAB, DIMS, source="groups.yaml")


# ---- the loss ----------------------------------------------------------------------------------------------
def test_hierarchy_loss_applies_at_its_prefix_and_pulls_groups_apart():
    torch.manual_seed(0)
    student = torch.nn.Module()
    student.embedding = torch.nn.Parameter(torch.randn(20, 16))  # (V, D)
    ids, labels = np.arange(12), np.repeat([0, 1, 2], 4)
    term = HierarchyLoss([(8, ids, labels)], weight=1.0)
    assert term(None, 16, model=student) is None
    before = cohesion(student.embedding.detach().numpy()[:, :8], ids, labels)["gap"]
    opt = torch.optim.Adam([student.embedding], lr=0.05)
    first = float(term(None, 8, model=student).detach())
    for _ in range(50):
        opt.zero_grad()
        term(None, 8, model=student).backward()
        opt.step()
    assert float(term(None, 8, model=student).detach()) < 0.5 * first
    after = cohesion(student.embedding.detach().numpy()[:, :8], ids, labels)["gap"]
    assert after > before + 0.3
    assert torch.equal(student.embedding.grad[12:], torch.zeros(8, 16))  # ungrouped tokens untouched


# ---- emergent groups ---------------------------------------------------------------------------------------
def test_emergent_clustering_recovers_a_planted_two_level_hierarchy():
    rng = np.random.default_rng(0)
    D, n_coarse, n_fine, per = 32, 4, 3, 15
    coarse = rng.normal(size=(n_coarse, D))
    vectors, coarse_true, fine_true = [], [], []
    for c in range(n_coarse):
        for f in range(n_fine):
            center = coarse[c] + 0.7 * rng.normal(size=D)  # fine groups scattered around their coarse one
            vectors.append(center + 0.25 * rng.normal(size=(per, D)))
            coarse_true += [c] * per
            fine_true += [c * n_fine + f] * per
    x = np.concatenate(vectors)  # (180, D) a toy teacher's token targets
    order = rng.permutation(len(x))  # tokens in no particular order
    ids = np.arange(len(x)) + 100
    h = emergent_hierarchy(ids, x[order], dims=[8, 16, 32], branching=(4, 3), min_size=3)
    assert [lv.prefix for lv in h.levels] == [8, 16]
    truth = {"coarse": np.array(coarse_true)[order], "fine": np.array(fine_true)[order]}
    for level, key in zip(h.levels, ("coarse", "fine")):
        found = np.empty(len(x), dtype=int)
        for k, g in enumerate(level.groups):
            found[np.asarray(g.ids) - 100] = k
        assert adjusted_rand_score(truth[key], found) >= 0.9, key
    parents = {g.name for g in h.levels[0].groups}
    assert all(g.parent in parents and g.name.startswith(g.parent + ".") for g in h.levels[1].groups)


# ---- through `distill run` ---------------------------------------------------------------------------------
def _cfg(tmp_path, teacher_dir, corpus, name, hierarchy=None, lr=3e-3, **extra) -> RunConfig:
    train = TrainConfig(epochs=2, batch_size=16, lr=lr, checkpoint_every=1000, log_every=5)
    return RunConfig(out=str(tmp_path / name), teacher=str(teacher_dir), corpus=str(corpus), holdout=20,
                     dims=(8, 16, 32), targets_dir=str(tmp_path / "targets"), train=train,
                     hierarchy=hierarchy or HierarchyConfig(), **extra)


def test_imposed_groups_widen_the_gap_at_their_prefix(tmp_path, tiny_bert_dir, tiny_corpus):
    groups = tmp_path / "groups.yaml"
    groups.write_text("levels:\n  - prefix: 8\n    groups:\n      vowels: {class: vowels}\n"
                      "      consonants: {class: consonants}\n      digits: {class: digits}\n"
                      "      marks: {class: punctuation}\n")
    # the same seed and options but for the groups; a high learning rate so that 24 steps move the rows
    with_groups = run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, "with", HierarchyConfig(groups=str(groups)), lr=0.05))
    without = run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, "without", lr=0.05))
    saved = json.loads((tmp_path / "with" / "groups.json").read_text())
    assert saved["source"] == "imposed" and saved["levels"][0]["prefix"] == 8
    assert {"a", "e", "##a"} <= set(saved["levels"][0]["groups"][0]["tokens"])  # vowels, word-initial or not

    from distill.hierarchy import Hierarchy
    from distill.students import load_student

    level = Hierarchy.from_json(saved).levels[0]
    gaps = {}
    for name in ("with", "without"):
        rows = load_student(tmp_path / name).embedding.detach().numpy()
        gaps[name] = {d: cohesion(rows[:, :d], *level.labels())["gap"] for d in (8, 32)}
    assert gaps["with"][8] > gaps["without"][8] + 0.1, gaps
    assert with_groups["hierarchy"]["levels"][0]["student"]["gap"] == pytest.approx(gaps["with"][8], abs=1e-4)
    assert "hier@8" in json.loads((tmp_path / "with" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "hierarchy" not in without


def test_char_level_emergent_run_and_groups_command(tmp_path, tiny_bert_dir, tiny_corpus):
    from distill.cli import app

    summary = run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, "chars", tokenizer="char",
                       hierarchy=HierarchyConfig(emergent=True, branching=(2, 3), min_size=2, refresh_every=10)))
    folder = tmp_path / "chars"
    saved = json.loads((folder / "groups.json").read_text())
    assert saved["meta"].get("refreshed_from") == "student"  # re-clustered from the student during training
    tokens = {t for g in saved["levels"][0]["groups"] for t in g["tokens"]}
    assert {"a", "e", "T", "."} <= tokens and all(len(t) == 1 for t in tokens)
    assert [lv["prefix"] for lv in summary["hierarchy"]["levels"]] == [8, 16]

    result = CliRunner().invoke(app, ["groups", str(folder), "--top", "3"])
    assert result.exit_code == 0, result.output
    tree = json.loads((folder / "groups-tree.json").read_text())
    first = tree["levels"][0]["groups"][0]
    assert f"[8] {first['name']} ({first['size']}): " + " ".join(first["typical"]) in result.output
    child = tree["levels"][1]["groups"][0]
    assert f"  [16] {child['name']} " in result.output and child["parent"] == first["name"]
    assert len(first["typical"]) == 3 and set(first["typical"]) <= set(first["tokens"])

    missing = CliRunner().invoke(app, ["groups", str(tmp_path)])
    assert missing.exit_code == 2 and "without --groups or --emergent" in missing.output
