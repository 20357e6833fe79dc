"""Evaluation numbers on planted data: STS Spearman equals scipy's, word pairs, 3CosAdd analogies, `distill eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DistillError
from distill.pipeline.evaluate import read_pairs, sts_scores
from distill.pipeline.wordsim import (
    TokenSpace,
    analogy_accuracy,
    read_analogies,
    read_word_pairs,
    word_similarity,
)
from distill.report.evaluation import evaluate_model


class TableModel:
    """A model whose text vectors are planted rows: ``encode`` looks each text up in a table."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table, self.dim = table, len(next(iter(table.values())))

    def encode(self, texts, dim=None, batch_size=64, progress=False):
        x = np.stack([self.table[t] for t in texts])[:, :dim].astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def _planted_sts(tmp_path, n: int = 40):
    rng = np.random.default_rng(0)
    table = {f"sentence {i}": rng.normal(size=8) for i in range(2 * n)}
    lines = [f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.2f}\t"
             f"sentence {2 * i}\tsentence {2 * i + 1}" for i in range(n)]
    path = tmp_path / "sts.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, TableModel(table)


def test_sts_spearman_equals_scipy_per_prefix(tmp_path):
    path, model = _planted_sts(tmp_path)
    pairs = read_pairs(path)
    got = sts_scores(model, pairs, [4, 8])
    for d in (4, 8):
        a = model.encode(pairs.first, d)
        b = model.encode(pairs.second, d)
        cos = np.sum(a * b, axis=1)
        assert got[str(d)]["spearman"] == pytest.approx(100 * spearmanr(cos, pairs.scores).statistic, abs=1e-6)
        assert got[str(d)]["pearson"] == pytest.approx(100 * pearsonr(cos, pairs.scores).statistic, abs=1e-6)
    assert got["4"]["spearman"] != pytest.approx(got["8"]["spearman"])  # prefixes are really cut


def test_evaluate_model_adds_the_teacher_baseline(tmp_path):
    path, model = _planted_sts(tmp_path)
    result = evaluate_model(model, [4, 8], sts=path, teacher=model)
    assert result["sts"]["student"] == result["sts"]["teacher"]
    with pytest.raises(DistillError, match="nothing to evaluate"):
        evaluate_model(model, [4])
    with pytest.raises(DistillError, match="outside 1..8"):
        evaluate_model(model, [16], sts=path)


def _toy_space() -> TokenSpace:
    """Four planted analogies hold exactly (b - a + c == d); a distractor breaks a fifth."""
    strings = ["man", "woman", "king", "queen", "boy", "girl", "paris", "france", "rome", "italy", "noise"]
    e = np.eye(8)
    # gender axis e0; royalty e1; youth e2; capitals: country = city + e3, with cities on e4 / e5
    vec = {"man": e[6], "woman": e[6] + e[0], "king": e[6] + e[1], "queen": e[6] + e[0] + e[1],
           "boy": e[6] + e[2], "girl": e[6] + e[2] + e[0], "paris": e[4], "france": e[4] + e[3],
           "rome": e[5], "italy": e[5] + e[3], "noise": e[7]}
    return TokenSpace(strings, np.stack([vec[s] for s in strings]).astype(np.float32))


def test_analogy_accuracy_on_a_planted_space(tmp_path):
    path = tmp_path / "questions-words.txt"
    path.write_text(": family\nman woman king queen\nman woman boy girl\nking queen man noise\n"
                    ": capital\nparis france rome italy\nParis France Rome Italy\nparis france oslo norway\n")
    sections = read_analogies(path)
    assert list(sections) == ["family", "capital"] and len(sections["capital"]) == 3
    got = analogy_accuracy(_toy_space(), sections, [8])["8"]
    # asked: 5 (oslo/norway are not in the vocabulary); right: all but "king queen man noise"
    assert (got["n"], got["oov"], got["correct"]) == (5, 1, 4)
    assert got["accuracy"] == pytest.approx(80.0)
    assert got["sections"] == {"family": pytest.approx(100 * 2 / 3), "capital": pytest.approx(100.0)}
    # cut to 2 dims (gender, royalty), the space cannot tell the cities apart: accuracy drops
    assert analogy_accuracy(_toy_space(), sections, [2])["2"]["correct"] < 4


def test_word_similarity_matches_scipy_and_skips_oov(tmp_path):
    space = _toy_space()
    path = tmp_path / "pairs.txt"
    path.write_text("# word1 word2 score\nword1 word2 score\nman woman 8\nking queen 7.5\nman king 3\n"
                    "paris rome 6\nparis noise 0.5\nman unicorn 5\n")
    pairs = read_word_pairs(path)
    assert len(pairs) == 6
    got = word_similarity(space, pairs, [8])["8"]
    assert (got["n"], got["oov"]) == (5, 1)
    x = space.vectors / np.linalg.norm(space.vectors, axis=1, keepdims=True)
    idx = space.index()
    kept = pairs[:5]
    cos = [float(x[idx[a]] @ x[idx[b]]) for a, b, _ in kept]
    assert got["spearman"] == pytest.approx(100 * spearmanr(cos, [s for *_, s in kept]).statistic)


def test_malformed_word_files_are_user_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text(": s\na b c\n")
    with pytest.raises(DistillError, match="four words"):
        read_analogies(bad)
    bad.write_text("a b\n")
    with pytest.raises(DistillError, match="word1 word2 score"):
        read_word_pairs(bad)
    with pytest.raises(DistillError, match="does not exist"):
        read_word_pairs(tmp_path / "missing.txt")


def test_eval_cli_on_a_teacher_folder(tmp_path, tiny_bert_dir):
    sts = tmp_path / "pairs.jsonl"
    sts.write_text("\n".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) for a, b, s in
                             [("the cat sees a dog", "a dog sees the cat", 4.5), ("the river", "an apple", 0.5),
                              ("my neighbour builds a boat", "the engineer builds a machine", 2.5),
                              ("the old man", "a young girl", 1.0)]))
    words = tmp_path / "words.txt"
    words.write_text("cat dog 8\nriver bridge 5\napple market 2\nman girl 6\n")
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["eval", str(tiny_bert_dir), "--sts", str(sts), "--word-pairs", str(words),
                                      "--dims", "16,32", "--json", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert set(scores["sts"]["student"]) == {"16", "32"} and scores["word_pairs"]["student"]["32"]["n"] == 4
    assert "spearman" in result.output
    bad = CliRunner().invoke(app, ["eval", str(tiny_bert_dir), "--dims", "16"])
    assert bad.exit_code == 2 and "nothing to evaluate" in bad.output
