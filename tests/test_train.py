import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import distill
from distill.errors import DistillError, TrainingError
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig, Trainer


def _cfg(tmp_path, teacher_dir, corpus, name="run", student="static", hierarchy=None, **train) -> RunConfig:
    train = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "checkpoint_every": 5, "log_every": 1, **train}
    extra = {"hierarchy": hierarchy} if hierarchy else {}
    return RunConfig(out=str(tmp_path / name), teacher=str(teacher_dir), corpus=str(corpus), holdout=20,
                     dims=(8, 16, 32), targets_dir=str(tmp_path / "targets"), student=student, width=32,
                     n_heads=2, train=TrainConfig(**train), **extra)


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "student" / "model.safetensors"))


def test_static_student_drives_the_loss_down(tmp_path, tiny_bert_dir, tiny_corpus):
    summary = run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, epochs=6))
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["train"]["steps"] == steps[-1]["step"] == 6 * 12  # 180 texts / 16 per step
    first = np.mean([s["loss"] for s in steps[:3]])
    last = np.mean([s["loss"] for s in steps[-3:]])
    assert last < 0.8 * first
    for d in (8, 16, 32):
        assert {f"mse@{d}", f"cos@{d}", f"rel@{d}"} <= set(steps[-1])
    student = distill.load(tmp_path / "run")
    assert student.dims == [8, 16, 32]
    assert (tmp_path / "run" / "student-st" / "modules.json").is_file()
    assert set(summary["holdout"]["student"]) == {"8", "16", "32"}


@pytest.mark.parametrize("student", ["static", "transformer", "emergent"])
def test_killed_run_resumed_ends_with_the_same_weights(tmp_path, tiny_bert_dir, tiny_corpus, monkeypatch, student):
    # "emergent": groups re-clustered from the student every 3 steps and sampled 6 tokens a call, so
    # the checkpoint must carry the refreshed groups and the sampling counter to resume exactly
    hierarchy = None
    if student == "emergent":
        from distill.hierarchy import HierarchyConfig

        student, hierarchy = "static", HierarchyConfig(emergent=True, branching=(2, 3), min_size=2,
                                                       refresh_every=3, sample=6, weight=1.0)
    run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, "straight", student=student, hierarchy=hierarchy))

    original = Trainer._loss

    def dies_at_step_8(self, idx):
        if self.step == 8:  # after the checkpoint of step 5, before the one of step 10
            raise KeyboardInterrupt("killed")
        return original(self, idx)

    monkeypatch.setattr(Trainer, "_loss", dies_at_step_8)
    cfg = _cfg(tmp_path, tiny_bert_dir, tiny_corpus, "killed", student=student, hierarchy=hierarchy)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert not (tmp_path / "killed" / "student").exists()
    with open(tmp_path / "killed" / "metrics.jsonl", "a") as f:  # a line torn by the kill
        f.write('{"step": 9, "lo')
    monkeypatch.setattr(Trainer, "_loss", original)
    with pytest.raises(DistillError, match="pass --resume"):
        run(cfg)
    run(cfg, resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    metrics = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert metrics == sorted(set(metrics))  # no step logged twice after the resume
    if hierarchy:
        assert (tmp_path / "killed" / "groups.json").read_text() == (tmp_path / "straight" / "groups.json").read_text()


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, tiny_bert_dir, tiny_corpus, monkeypatch):
    run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, "straight"))
    original = Trainer._loss

    def dies_at_step_12(self, idx):
        if self.step == 12:  # after the checkpoints of steps 5 and 10
            raise KeyboardInterrupt("killed")
        return original(self, idx)

    monkeypatch.setattr(Trainer, "_loss", dies_at_step_12)
    cfg = _cfg(tmp_path, tiny_bert_dir, tiny_corpus, "killed")
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(Trainer, "_loss", original)
    checkpoints = tmp_path / "killed" / "checkpoints"
    newest = checkpoints / "step-0000010.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # torn
    (checkpoints / ".step-0000015.pt.123.tmp").write_bytes(b"half a save")
    run(cfg, resume=True)
    assert (checkpoints / "step-0000010.pt.bad").is_file() and not list(checkpoints.glob(".*.tmp"))
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert all(np.array_equal(a[k], b[k]) for k in a)  # resumed from step 5: the same weights in the end


def test_resume_with_other_options_is_refused(tmp_path, tiny_bert_dir, tiny_corpus):
    run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, epochs=1))
    with pytest.raises(DistillError, match="options differ"):
        run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, epochs=2), resume=True)
    # a folder written before an option existed resumes: the missing key takes its default
    saved = tmp_path / "run" / "config.json"
    old = json.loads(saved.read_text())
    del old["token_weights"]
    saved.write_text(json.dumps(old))
    run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, epochs=1), resume=True)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(
        tmp_path, tiny_bert_dir, tiny_corpus, monkeypatch):
    original = Trainer._loss

    def poisoned(self, idx):
        loss, logs = original(self, idx)
        return (loss * float("nan"), logs) if self.step == 7 else (loss, logs)

    monkeypatch.setattr(Trainer, "_loss", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at step 7.*last good checkpoint"):
        run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus))
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["step-0000005.pt"]
    assert torch.isfinite(torch.load(tmp_path / "run" / "checkpoints" / kept[0])["model"]["embedding"]).all()


def test_same_seed_gives_the_same_student_twice(tmp_path, tiny_bert_dir, tiny_corpus):
    run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, "a", epochs=1))
    run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, "b", epochs=1))
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval_loss(folder, targets_texts):
    """Nested loss of a trained student on all training texts in one batch (deterministic)."""
    from distill.pipeline.pca import PCARotation
    from distill.students.losses import NestedLoss

    student = distill.load(folder)
    texts, targets = targets_texts
    pca = PCARotation.load(folder / "pca.npz")
    x = torch.from_numpy(student.embed_ids(student.tokenize(texts)))
    loss, _ = NestedLoss(student.dims)(x, torch.from_numpy(pca.transform(targets)))
    return float(loss)


def test_two_processes_under_accelerate_reach_the_same_loss(tmp_path, tiny_bert_dir, tiny_corpus):
    from distill.pipeline.corpus import read_corpus
    from distill.pipeline.targets import TargetView

    args = ["--teacher", str(tiny_bert_dir), "--corpus", str(tiny_corpus), "--holdout", "20", "--dims", "8,16,32",
            "--epochs", "3", "--batch-size", "16", "--lr", "0.003", "--targets-dir", str(tmp_path / "targets")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "distill.cli", "run", "--out", str(tmp_path / "one"), *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    # `accelerate launch --cpu` starts one process unless MPI is set up; torchrun (what `accelerate launch
    # --multi_gpu` runs) starts two, and distill makes them a gloo group on a machine without CUDA
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), "-m", "distill.cli", "run", "--out", str(tmp_path / "two"), *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    texts = read_corpus(tiny_corpus).texts
    data = (texts, TargetView.load(tmp_path / "one" / "data").pooled())
    for run_dir in ("one", "two"):  # both ran every step (the drop of the loss is tested above)
        assert json.loads((tmp_path / run_dir / "summary.json").read_text())["train"]["steps"] == 3 * 12
    assert "world size 2" in two.stderr
    # the text terms see the global batch under two processes: the same batches give the same loss
    logged = [[json.loads(ln)["loss"] for ln in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
              for r in ("one", "two")]
    assert len(logged[0]) == len(logged[1]) == 4  # steps 10, 20, 30, 36
    np.testing.assert_allclose(logged[0], logged[1], rtol=1e-3)
    a, b = _eval_loss(tmp_path / "one", data), _eval_loss(tmp_path / "two", data)
    print(f"eval loss: one process {a!r}, two processes {b!r}")
    assert abs(a - b) / a < 0.01


def test_epoch_order_is_a_seeded_permutation_with_batches_of_similar_length():
    from distill.pipeline.train import epoch_order

    lengths = np.random.default_rng(0).integers(1, 200, size=1000)
    order = epoch_order(1000, seed=3, batch=16, lengths=lengths)
    assert sorted(order) == list(range(1000))
    assert np.array_equal(order, epoch_order(1000, seed=3, batch=16, lengths=lengths))
    assert not np.array_equal(order, epoch_order(1000, seed=4, batch=16, lengths=lengths))
    spread = [np.ptp(lengths[order[i:i + 16]]) for i in range(0, 1000, 16)]
    random_spread = [np.ptp(lengths[i:i + 16]) for i in range(0, 1000, 16)]
    assert np.mean(spread) < 0.2 * np.mean(random_spread)
    assert np.array_equal(epoch_order(50, seed=1, batch=16), np.random.default_rng(1).permutation(50))


def test_a_bad_corpus_fails_before_any_teacher_work(tmp_path, monkeypatch):
    import distill.teachers as teachers_module
    from distill.errors import CorpusError

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was loaded before the corpus was checked")

    monkeypatch.setattr(teachers_module, "load_teacher", no_teacher)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\n\xff\xfe broken\n")
    with pytest.raises(CorpusError, match="not UTF-8"):
        run(RunConfig(out=str(tmp_path / "run"), corpus=str(bad)))
    assert not (tmp_path / "run").exists()  # nothing written: the same command can simply be rerun
    few = tmp_path / "few.txt"
    few.write_text("one\ntwo\nthree\n")
    with pytest.raises(DistillError, match="too few to train on"):
        run(RunConfig(out=str(tmp_path / "run2"), corpus=str(few), holdout=2))


def test_a_run_that_failed_before_training_can_be_rerun_as_is(tmp_path, tiny_bert_dir, tiny_corpus):
    from distill.errors import TeacherNotFoundError

    cfg = _cfg(tmp_path, tiny_bert_dir, tiny_corpus, epochs=1)
    with pytest.raises(TeacherNotFoundError):
        run(RunConfig(**{**cfg.__dict__, "teacher": str(tmp_path / "no-such-teacher")}))
    run(cfg)  # same --out, no --resume needed: nothing had been trained
    assert (tmp_path / "run" / "student").is_dir()


def test_default_holdout_is_a_tenth_of_a_small_corpus(tmp_path, tiny_bert_dir, tiny_corpus):
    cfg = _cfg(tmp_path, tiny_bert_dir, tiny_corpus, epochs=1)
    summary = run(RunConfig(**{**cfg.__dict__, "holdout": None}))
    assert summary["holdout_texts"] == 20 and summary["train_texts"] == 180


@pytest.mark.parametrize("weights", ["sif", "bm25", "none"])
def test_token_weights_set_the_initial_pooling_weights_and_the_run_trains(tmp_path, tiny_bert_dir, tiny_corpus,
                                                                          weights):
    import math
    from collections import Counter

    from safetensors.numpy import load_file

    from distill.pipeline.data import TokenArrays
    from distill.pipeline.folder import RunFolder
    from distill.pipeline.prepare import load_vocab

    cfg = RunConfig(**{**_cfg(tmp_path, tiny_bert_dir, tiny_corpus, epochs=1).__dict__, "token_weights": weights})
    run(cfg, until="train")
    out = tmp_path / "run"
    assert json.loads((out / "train.json").read_text())["steps"] == 12  # 180 texts / 16 per step
    init = load_file(str(RunFolder(out).student_init / "model.safetensors"))["log_weight"]
    trained = load_file(str(out / "student" / "model.safetensors"))["log_weight"]
    assert not np.allclose(init, trained)  # training moved the weights
    # hand count over the training texts: a frequent token, a rare one
    tokens = TokenArrays(RunFolder(out).data)
    train_idx = np.load(RunFolder(out).split)["train"]
    seqs = [list(tokens.seq(i)) for i in train_idx]
    counts = Counter(t for s in seqs for t in s)
    df = Counter(t for s in seqs for t in set(s))
    vocab_ids = set(load_vocab(out).ids.tolist())
    seen = sorted((t for t in counts if t in vocab_ids), key=lambda t: -counts[t])
    total, V, N = sum(counts.values()), len(init), len(seqs)
    for t in (seen[0], seen[-1]):
        if weights == "sif":
            expected = math.log(1e-3 / (1e-3 + (counts[t] + 1) / (total + V)))
        elif weights == "bm25":
            expected = math.log(math.log(1 + (N - df[t] + 0.5) / (df[t] + 0.5)))
        else:
            expected = 0.0
        assert init[t] == pytest.approx(expected, abs=1e-5)
    if weights == "bm25":  # a rarer token weighs more; a token in more texts than another weighs less
        assert init[seen[-1]] > init[seen[0]]
        assert df[seen[0]] > df[seen[-1]]
    unused = next(t for t in range(V) if t not in vocab_ids)
    assert init[unused] == -20.0  # no teacher target: next to no weight, whatever the choice


def test_an_unknown_token_weighting_is_refused(tmp_path, tiny_bert_dir, tiny_corpus):
    from distill.pipeline.init import TokenWeighting

    with pytest.raises(DistillError, match="unknown token weighting.*'tfidf' \\(choose from sif, bm25, none\\)"):
        RunConfig(**{**_cfg(tmp_path, tiny_bert_dir, tiny_corpus).__dict__, "token_weights": "tfidf"})
    with pytest.raises(DistillError, match="unknown token weighting 'SIF'"):
        TokenWeighting.parse("SIF")


def test_a_long_batch_runs_in_passes_with_the_loss_and_gradients_of_one_pass(tmp_path, tiny_bert_dir, tiny_corpus,
                                                                             monkeypatch):
    """A micro-batch of more padded positions than TOKENS_PER_PASS runs in passes of texts of similar length,
    each padded to its own longest text: the same loss and gradients as the one pass padded to the longest."""
    from tokenizers import Tokenizer

    from distill.pipeline import train as train_module
    from distill.pipeline.data import TokenArrays, TrainSet
    from distill.pipeline.pca import PCARotation
    from distill.pipeline.targets import TargetView
    from distill.students import StudentConfig, build_student

    cfg = _cfg(tmp_path, tiny_bert_dir, tiny_corpus, student="transformer", epochs=1)
    run(cfg, until="targets")
    data = tmp_path / "run" / "data"
    view, tokens = TargetView.load(data), TokenArrays(data)
    ids, _ = view.token_slices(np.arange(len(view)))
    assert all(np.array_equal(a, b) for a, b in zip(view.token_ids(np.arange(len(view))), ids))  # ids alone
    dataset = TrainSet(tokens, view, np.load(data / "split.npz")["train"], static=False, token_targets=True)
    config = StudentConfig(**json.loads((data / "student.json").read_text()))
    torch.manual_seed(0)
    student = build_student(config, Tokenizer.from_str((data / "tokenizer.json").read_text()))
    with torch.no_grad():  # the head starts at zero: move every weight so that every gradient is non-zero
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer = Trainer(student, dataset, cfg.train, tmp_path / "run", PCARotation.load(tmp_path / "run" / "pca.npz"),
                      device="cpu")
    batch = dataset.__getitems__(list(range(64)))
    lengths = batch["mask"].sum(1).numpy()
    assert np.ptp(lengths) > 3  # texts of different lengths

    def loss_and_grads(budget: int):
        monkeypatch.setattr(train_module, "TOKENS_PER_PASS", budget)
        student.zero_grad(set_to_none=True)
        loss, logs = trainer._loss(batch)
        loss.backward()
        return float(logs["loss"]), {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    one_loss, one = loss_and_grads(10**9)
    budget = 4 * int(lengths.max())
    passes = train_module.length_passes(lengths, budget)
    assert len(passes) > 2 and sorted(np.concatenate(passes).tolist()) == list(range(64))
    assert all(len(rows) * lengths[rows].max() <= budget for rows in passes)
    assert all(lengths[a].max() <= lengths[b].min() for a, b in zip(passes, passes[1:]))  # by length
    many_loss, many = loss_and_grads(budget)
    assert many_loss == pytest.approx(one_loss, rel=1e-6)
    assert many.keys() == one.keys() and len(one) == len(list(student.parameters()))
    for name in one:
        torch.testing.assert_close(many[name], one[name], rtol=1e-4, atol=1e-7, msg=name)
