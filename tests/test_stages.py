"""The stages of a run hand off through the run folder; the data path streams from the target store."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distill.cli import app
from distill.errors import DistillError
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _args(teacher_dir, corpus, tmp_path, out: str, *extra: str) -> list[str]:
    return ["run", "--teacher", str(teacher_dir), "--corpus", str(corpus), "--out", str(tmp_path / out),
            "--holdout", "20", "--dims", "8,16,32", "--epochs", "2", "--batch-size", "16",
            "--targets-dir", str(tmp_path / "targets"), "--device", "cpu", *extra]


def _weights(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "student" / "model.safetensors"))


def test_stages_run_alone_give_what_one_run_gives(tmp_path, tiny_bert_dir, tiny_corpus):
    runner = CliRunner()
    whole = runner.invoke(app, _args(tiny_bert_dir, tiny_corpus, tmp_path, "whole"))
    assert whole.exit_code == 0, whole.output

    staged = tmp_path / "staged"
    first = runner.invoke(app, _args(tiny_bert_dir, tiny_corpus, tmp_path, "staged", "--until", "targets"))
    assert first.exit_code == 0, first.output
    data = staged / "data"
    assert {p.name for p in data.iterdir()} >= {"meta.json", "targets.json", "targets.rows.npy", "vocab.json",
                                                "split.npz", "tokens.ids.bin", "tokens.offsets.npy",
                                                "holdout.jsonl", "student.json", "tokenizer.json"}
    assert not (staged / "student").exists() and (staged / "pca.npz").is_file()
    meta = json.loads((data / "meta.json").read_text())
    assert (meta["texts"], meta["train"], meta["held"]) == (200, 180, 20)

    trained = runner.invoke(app, ["train", str(staged)])
    assert trained.exit_code == 0, trained.output
    assert "trained 24 steps" in trained.output  # 180 texts / 16 a step, 2 epochs
    again = runner.invoke(app, ["train", str(staged)])
    assert again.exit_code == 2 and "already holds a trained student" in again.output
    evaluated = runner.invoke(app, ["eval", str(staged)])
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((staged / "summary.json").read_text())
    assert set(summary["holdout"]["student"]) == {"8", "16", "32"}
    assert summary["train"]["steps"] == 24
    # the rotated teacher's own prefixes beside the raw cut: rotation keeps the full width exact
    assert summary["holdout"]["teacher_rotated"]["32"]["overlap@10"] == pytest.approx(1.0)
    exported = runner.invoke(app, ["export", str(staged), "--out", str(tmp_path / "st")])
    assert exported.exit_code == 0 and (tmp_path / "st" / "modules.json").is_file()

    a, b = _weights(tmp_path / "whole"), _weights(staged)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    # a finished run is skipped stage by stage under --resume: nothing is labeled or trained again
    resumed = runner.invoke(app, _args(tiny_bert_dir, tiny_corpus, tmp_path, "whole", "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert all(np.array_equal(a[k], v) for k, v in _weights(tmp_path / "whole").items())


def test_a_grown_corpus_labels_only_its_new_texts(tmp_path, tiny_bert_dir, tiny_texts, forward_calls):
    labeled = forward_calls
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tiny_texts[:150]) + "\n", encoding="utf-8")

    def cfg(out: str, limit: int | None = None) -> RunConfig:
        return RunConfig(out=str(tmp_path / out), teacher=str(tiny_bert_dir), corpus=str(corpus), limit=limit,
                         holdout=10, dims=(8, 32), targets_dir=str(tmp_path / "targets"), device="cpu",
                         train=TrainConfig(epochs=1, batch_size=32))

    run(cfg("a"))
    vocab_size = 159
    assert sum(labeled) == vocab_size + 150
    labeled.clear()
    run(cfg("b", limit=100))  # a smaller --limit labels nothing
    assert labeled == []
    with open(corpus, "a", encoding="utf-8") as f:
        f.write("\n".join(tiny_texts[150:153]) + "\n")
    run(cfg("c"))
    assert sum(labeled) == 3  # the three new texts only


def test_training_batches_come_rotated_from_the_store(tmp_path, tiny_bert_dir, tiny_corpus):
    from distill.pipeline.data import TokenArrays, TrainSet
    from distill.pipeline.pca import PCARotation
    from distill.pipeline.targets import TargetView

    cfg = RunConfig(out=str(tmp_path / "r"), teacher=str(tiny_bert_dir), corpus=str(tiny_corpus), holdout=20,
                    dims=(8, 32), targets_dir=str(tmp_path / "targets"), student="transformer", width=32,
                    n_heads=2, train=TrainConfig(epochs=1, batch_size=16))
    run(cfg, until="targets")
    data = tmp_path / "r" / "data"
    view, tokens = TargetView.load(data), TokenArrays(data)
    train_rows = np.load(data / "split.npz")["train"]
    dataset = TrainSet(tokens, view, train_rows, static=False, token_targets=True)
    batch = dataset.__getitems__([3, 0, 7])
    rows = train_rows[[3, 0, 7]]
    np.testing.assert_array_equal(batch["target"].numpy(), view.pooled(rows))
    ids, states = view.token_slices(rows)
    for r in range(3):  # the teacher's own token ids, padded, with their contextual states aligned
        n = len(ids[r])
        assert batch["mask"][r].sum() == n
        np.testing.assert_array_equal(batch["ids"][r, :n].numpy(), ids[r])
        np.testing.assert_array_equal(batch["token_target"][r, :n].numpy(), states[r])
        assert not batch["token_target"][r, n:].any()
    # the trainer's on-device rotation is the PCA of the run
    from distill.pipeline.train import Trainer
    from distill.students import StudentConfig, build_student

    pca = PCARotation.load(tmp_path / "r" / "pca.npz")
    config = StudentConfig(**json.loads((data / "student.json").read_text()))
    from tokenizers import Tokenizer

    student = build_student(config, Tokenizer.from_str((data / "tokenizer.json").read_text()))
    trainer = Trainer(student, dataset, cfg.train, tmp_path / "r", pca, device="cpu")
    rotated = trainer._rotate(batch["target"]).numpy()
    np.testing.assert_allclose(rotated, pca.transform(view.pooled(rows)), atol=1e-5)
    assert trainer.accelerator.device == torch.device("cpu")


def test_an_error_on_one_rank_stops_every_rank(tmp_path, tiny_bert_dir, tiny_corpus):
    import socket

    wrapper = tmp_path / "rank1_fails.py"
    wrapper.write_text(
        "import os\n"
        "import distill.pipeline.stages as stages\n"
        "from distill.errors import DistillError\n"
        "original = stages.train\n"
        "def train(*args, **kwargs):\n"
        "    if os.environ.get('RANK') == '1':\n"
        "        raise DistillError('rank 1 cannot go on')\n"
        "    return original(*args, **kwargs)\n"
        "stages.train = train\n"
        "from distill.cli import main\n"
        "main()\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(wrapper), *_args(tiny_bert_dir, tiny_corpus, tmp_path, "fails")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode != 0
    assert "rank 1 cannot go on" in done.stderr
    assert not (tmp_path / "fails" / "student").exists()


def test_a_corpus_changed_before_training_is_prepared_again(tmp_path, tiny_bert_dir, tiny_texts):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(tiny_texts[:100]) + "\n", encoding="utf-8")
    cfg = RunConfig(out=str(tmp_path / "r"), teacher=str(tiny_bert_dir), corpus=str(corpus), holdout=10,
                    dims=(8, 32), targets_dir=str(tmp_path / "targets"), device="cpu")
    run(cfg, until="targets")
    meta = tmp_path / "r" / "data" / "meta.json"
    assert json.loads(meta.read_text())["texts"] == 100
    run(cfg, until="targets")  # unchanged: kept as it is
    assert json.loads(meta.read_text())["texts"] == 100
    with open(corpus, "a", encoding="utf-8") as f:
        f.write("\n".join(tiny_texts[100:120]) + "\n")
    run(cfg, until="targets")
    assert json.loads(meta.read_text())["texts"] == 120


def test_a_run_without_a_corpus_distils_the_vocabulary(tmp_path, tiny_bert_dir):
    result = CliRunner().invoke(app, ["run", "--teacher", str(tiny_bert_dir), "--corpus", "none", "--out",
                                      str(tmp_path / "v"), "--dims", "8,32", "--targets-dir",
                                      str(tmp_path / "targets")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["train_texts"] == 0 and "train" not in summary and "holdout" not in summary
    assert "PCA-rotated vocabulary" in summary["note"] and "note: no training texts" in result.output
    page = (tmp_path / "v" / "report.html").read_text(encoding="utf-8")
    assert "<strong>Note:</strong> no training texts: the student is the teacher&#x27;s PCA-rotated" in page
    import distill
    from distill.pipeline.prepare import load_vocab
    from distill.teachers import load_teacher

    student = distill.load(tmp_path / "v")
    vocab = load_vocab(tmp_path / "v")
    from distill.pipeline.pca import PCARotation

    rows = PCARotation.load(tmp_path / "v" / "pca.npz").transform(vocab.pooled)[:, :32]
    np.testing.assert_allclose(student.embed_ids([[int(vocab.ids[5])]])[0], rows[5], atol=1e-5)
    assert load_teacher(tiny_bert_dir, device="cpu").dim == vocab.pooled.shape[1]


@pytest.mark.parametrize("teacher", ["tiny_bert_dir", "tiny_gpt2_dir"])
def test_non_unit_teachers_train_with_the_default_options(tmp_path, teacher, tiny_corpus, request):
    """Plain BERT mean pooling and GPT-2 last-token states have norms far from 1: targets are scaled to
    unit RMS norm, so the default learning rate and loss weights work, and training improves on the init."""
    from distill.pipeline.pca import PCARotation
    from distill.pipeline.targets import TargetView

    teacher_dir = request.getfixturevalue(teacher)

    def summary(name: str, epochs: int) -> dict:
        cfg = RunConfig(out=str(tmp_path / name), teacher=str(teacher_dir), corpus=str(tiny_corpus), holdout=40,
                        dims=(8, 32), targets_dir=str(tmp_path / "targets"), device="cpu",
                        train=TrainConfig(epochs=epochs, batch_size=32, log_every=1))
        return run(cfg)

    init, trained = summary("init", 0), summary("trained", 10)
    norms = np.linalg.norm(TargetView.load(tmp_path / "trained" / "data").pooled(), axis=1)
    scale = PCARotation.load(tmp_path / "trained" / "pca.npz").scale
    assert norms.mean() > 3 and scale == pytest.approx(np.sqrt((norms ** 2).mean()), rel=1e-3)
    steps = [json.loads(ln)["loss"] for ln in (tmp_path / "trained" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(steps[-5:]) < 0.9 * np.mean(steps[:5])

    def agreement(s: dict) -> float:
        return float(np.mean([v["sim_spearman"] for v in s["holdout"]["student"].values()]))

    print(f"{teacher}: held-out similarity Spearman init {agreement(init):.3f} -> trained {agreement(trained):.3f}")
    assert agreement(trained) > agreement(init) + 0.01


def test_the_default_run_trains_on_the_shipped_corpus(tmp_path, tiny_bert_dir):
    # no --corpus: the WikiText-2 sentences shipped with distill; the student must beat its initialisation
    result = CliRunner().invoke(app, ["run", "--teacher", str(tiny_bert_dir), "--out", str(tmp_path / "d"),
                                      "--targets-dir", str(tmp_path / "targets"), "--dims", "8,32"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["train_texts"] + summary["holdout_texts"] == 4772 and summary["holdout_texts"] == 477
    steps = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["loss"] < 0.8 * steps[0]["loss"]
    held = summary["holdout"]
    for d in ("8", "32"):
        assert held["student"][d]["overlap@10"] > held["init"][d]["overlap@10"] + 0.02, held
    assert summary["speed"]["sentences_per_s"] > 0 and summary["size"]["teacher_parameters"] > 0
    assert "training moved overlap@10 at 32 dims from" in result.output
    assert "agreement with the teacher on 477 held-out texts" in result.output


def test_dim_weights_follow_the_prefix_sizes_a_narrow_teacher_keeps(tmp_path, tiny_bert_dir, tiny_corpus,
                                                                    monkeypatch):
    """--dims 8,16,32,64 on a 32-wide teacher drops 64, and its weight with it: the others keep theirs."""
    from distill.students.losses import nested

    built = []
    original = nested.NestedLoss.__init__

    def record(self, dims, dim_weights=None, **kw):
        original(self, dims, dim_weights, **kw)
        built.append((list(self.dims), list(self.dim_weights)))

    monkeypatch.setattr(nested.NestedLoss, "__init__", record)
    result = CliRunner().invoke(app, _args(tiny_bert_dir, tiny_corpus, tmp_path, "w", "--dims", "8,16,32,64",
                                           "--dim-weights", "1,2,3,4", "--epochs", "1"))
    assert result.exit_code == 0, result.output
    assert built == [([8, 16, 32], [1.0, 2.0, 3.0])]


def test_a_fresh_run_reads_the_corpus_three_times_and_a_finished_one_not_at_all(tmp_path, tiny_bert_dir,
                                                                                tiny_corpus, monkeypatch):
    """Hashing counts and checks it (no separate check pass), labeling reads it once for what is missing, the
    token ids once more; a rerun of a prepared run finds everything in the run folder."""
    from distill.pipeline.corpus import Corpus

    reads = []
    real = Corpus._raw

    def counted(self):
        reads.append(self.source)
        return real(self)

    monkeypatch.setattr(Corpus, "_raw", counted)
    cfg = RunConfig(out=str(tmp_path / "r"), teacher=str(tiny_bert_dir), corpus=str(tiny_corpus), holdout=20,
                    dims=(8, 32), targets_dir=str(tmp_path / "targets"))
    run(cfg, until="targets")
    assert len(reads) == 3
    reads.clear()
    run(cfg, until="targets")
    assert reads == []
    reads.clear()
    run(dataclasses.replace(cfg, out=str(tmp_path / "r2")), until="targets")
    assert len(reads) == 2  # every text's targets in the cache: hashed and tokenized, nothing labeled


def test_the_stage_table_names_files_of_the_run_folder(tmp_path):
    """Every input and output of the stage table is a path the RunFolder names; the stage questions start false."""
    from distill.pipeline.folder import RunFolder
    from distill.pipeline.stages import STAGE_NAMES, STAGES, stage

    folder = RunFolder(tmp_path / "run")
    assert STAGE_NAMES == ("targets", "train", "eval", "export")
    for s in STAGES:
        for name in s.inputs + s.outputs:
            assert getattr(folder, name).is_relative_to(folder.root), (s.name, name)
    assert not (folder.is_run() or folder.prepared() or folder.trained() or folder.started())
    with pytest.raises(DistillError, match="unknown stage 'tran' \\(one of targets, train, eval, export\\)"):
        stage("tran")
    with pytest.raises(DistillError, match="not a run folder"):
        folder.read_config()
