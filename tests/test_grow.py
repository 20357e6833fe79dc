"""Progressive growth (--grow-at): layers duplicated exactly, the grown student saved and loaded whole,
training going on through a growth point, and resume across one."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from distill.errors import DistillError
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig, Trainer, _schedule, growth_steps
from distill.students import StudentConfig, build_student, load_student
from distill.students.grow import depth, grow, layer_stack


def _layers_student(teacher_dir, layers):
    """A layers student of the tiny teacher keeping ``layers`` (random weights: only the structure matters)."""
    from transformers import AutoConfig

    from distill.students.layers import derived_hf_config

    hf = {k: v for k, v in derived_hf_config(AutoConfig.from_pretrained(teacher_dir).to_dict(), len(layers)).items()
          if not k.startswith("_") and k not in ("architectures", "torch_dtype", "dtype", "transformers_version")}
    tokenizer = Tokenizer.from_file(str(teacher_dir / "tokenizer.json"))
    config = StudentConfig(kind="layers", vocab_size=tokenizer.get_vocab_size(), dim=16, dims=[8, 16], hf_config=hf,
                           layers=list(layers), max_length=64)
    torch.manual_seed(0)
    return build_student(config, tokenizer)


def _transformer_student(teacher_dir):
    tokenizer = Tokenizer.from_file(str(teacher_dir / "tokenizer.json"))
    config = StudentConfig(kind="transformer", vocab_size=tokenizer.get_vocab_size(), dim=16, dims=[8, 16], width=32,
                           n_layers=2, n_heads=2, max_length=64)
    torch.manual_seed(0)
    student = build_student(config, tokenizer)
    torch.nn.init.normal_(student.head.weight, std=0.1)  # else the encoder (zero head) cannot change the output
    return student


@pytest.mark.parametrize("kind", ["bert", "gpt2", "transformer"])
def test_growth_duplicates_each_layer_exactly_and_the_grown_student_loads_the_same(
        kind, tmp_path, tiny_bert_dir, tiny_gpt2_dir, tiny_texts):
    if kind == "transformer":
        student = _transformer_student(tiny_bert_dir)
    else:
        student = _layers_student(tiny_bert_dir if kind == "bert" else tiny_gpt2_dir, [0, 1])
    name, stack = layer_stack(student)
    before = {k: v.clone() for k, v in stack.state_dict().items()}
    ids_before = {id(p) for p in student.parameters()}
    sources = grow(student)

    assert depth(student) == 4
    for key, value in layer_stack(student)[1].state_dict().items():  # layer 2i and 2i+1 are layer i's copies
        j, rest = key.split(".", 1)
        assert torch.equal(value, before[f"{int(j) // 2}.{rest}"]), key
    leaf = next(iter(before)).split(".", 1)[1]  # a parameter of layer 0, without its index
    assert sources[f"{name}.3.{leaf}"] == f"{name}.1.{leaf}" and sources["head.weight"] == "head.weight"
    stack_params = {id(p) for p in layer_stack(student)[1].parameters()}
    assert not stack_params & ids_before  # every copy is new: no optimizer or DDP wrapper still holds one
    if kind == "transformer":
        assert student.config.n_layers == 4
    else:  # the depth is the same wherever it is recorded; layers: the teacher layer each one started from
        assert student.config.layers == [0, 0, 1, 1]
        key = "num_hidden_layers" if kind == "bert" else "n_layer"
        assert student.config.hf_config[key] == getattr(student.encoder.config, key) == 4

    student.eval()
    x = student.encode(tiny_texts[:20])
    student.save(tmp_path / "grown")
    loaded = load_student(tmp_path / "grown")
    assert depth(loaded) == 4
    np.testing.assert_array_equal(loaded.encode(tiny_texts[:20]), x)


def test_grow_at_values_and_the_students_that_cannot_grow_are_refused():
    assert growth_steps((0.5,), 24) == [12]
    assert growth_steps((0.25, 20), 24) == [6, 20]
    assert growth_steps(None, 24) == [] and growth_steps((0.5,), 0) == []
    with pytest.raises(DistillError, match="shares of training in"):
        TrainConfig(grow_at=(1.5,))
    with pytest.raises(DistillError, match="each growth needs a step of its own"):
        growth_steps((0.5, 12), 24)
    with pytest.raises(DistillError, match="each growth needs a step of its own"):
        growth_steps((24,), 24)
    with pytest.raises(DistillError, match="a static student has no layers to grow"):
        RunConfig(out="o", student="static", train=TrainConfig(grow_at=(0.5,)))


def test_the_cli_parses_grow_at_and_refuses_it_for_a_static_student(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "r"), "--grow-at", "0.5"])
    assert result.exit_code == 2 and "a static student has no layers to grow" in result.output, result.output
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "r"), "--student", "layers", "--grow-at", "x"])
    assert result.exit_code == 2 and "--grow-at takes comma-separated" in result.output, result.output


def _cfg(tmp_path, teacher_dir, corpus, name, **train) -> RunConfig:
    # 180 training texts / 16 = 12 steps an epoch, 24 in all; growth after step 12; checkpoints every 5
    train = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "checkpoint_every": 5, "log_every": 1, "grow_at": (0.5,),
             **train}
    return RunConfig(out=str(tmp_path / name), teacher=str(teacher_dir), corpus=str(corpus), holdout=20,
                     dims=(8, 16, 32), targets_dir=str(tmp_path / "targets"), student="layers", depth=1,
                     train=TrainConfig(**train))


def _weights(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "student" / "model.safetensors"))


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_training_goes_on_through_growth_and_a_killed_run_resumes_across_it(
        tmp_path, tiny_bert_dir, tiny_corpus, monkeypatch):
    out = tmp_path / "straight"
    run(_cfg(tmp_path, tiny_bert_dir, tiny_corpus, "straight"), until="train")  # evaluation is not tested here
    summary = json.loads((out / "train.json").read_text())
    records = _records(out)
    grown = [r for r in records if r.get("event") == "grow"]
    assert len(grown) == 1 and grown[0]["step"] == 12 and grown[0]["layers"] == [1, 2]
    assert np.isfinite(grown[0]["loss_before"]) and np.isfinite(grown[0]["loss_after"])
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 25))  # every step logged, before and after growth
    assert all(np.isfinite(r["loss"]) for r in steps)
    assert summary["steps"] == 24 and summary["growth"] == grown
    # the schedule goes on across growth: the rebuilt optimizer's rate is the one the old one would have had
    base = 3e-3 / 30  # the encoder's rate (LayersStudent.PRETRAINED_LR)
    assert [r["lr"] for r in steps] == pytest.approx([base * _schedule(r["step"], 24, 1) for r in steps])
    # the grown student is whole: 2 layers, both started from teacher layer 1, loaded like any other
    student = load_student(out)
    assert depth(student) == 2 and student.config.layers == [1, 1]
    assert student.config.hf_config["num_hidden_layers"] == student.encoder.config.num_hidden_layers == 2
    # after growth the optimizer holds moments for every parameter of the grown model, and the two copies drifted
    checkpoint = torch.load(out / "checkpoints" / "step-0000024.pt", weights_only=True)
    assert checkpoint["grown"] == 1
    trained = [n for n, _ in student.named_parameters() if ".pooler." not in n]  # BERT's pooler gets no gradient
    assert len(checkpoint["optimizer"]["state"]) == len(trained) == 2 * 16 + 7
    w = _weights(out)
    a, b = (w[f"encoder.encoder.layer.{i}.attention.self.query.weight"] for i in (0, 1))
    assert not np.array_equal(a, b)

    # killed after the checkpoint of step 10 (resumes un-grown, grows again at 12), then after that of
    # step 15 (resumes grown): each resume ends with the same weights as the run never killed
    original = Trainer._loss
    cfg = _cfg(tmp_path, tiny_bert_dir, tiny_corpus, "killed")
    for kill_at, resume in ((13, False), (17, True)):
        def dies(self, batch, kill_at=kill_at):
            if self.step == kill_at:
                raise KeyboardInterrupt("killed")
            return original(self, batch)

        monkeypatch.setattr(Trainer, "_loss", dies)
        with pytest.raises(KeyboardInterrupt):
            run(cfg, resume=resume, until="train")
    monkeypatch.setattr(Trainer, "_loss", original)
    run(cfg, resume=True, until="train")
    killed = tmp_path / "killed"
    a, b = _weights(out), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert [r for r in _records(killed) if r.get("event") == "grow"] == [
        {**grown[0], "loss_before": pytest.approx(grown[0]["loss_before"]),
         "loss_after": pytest.approx(grown[0]["loss_after"])}]
    assert [r["step"] for r in _records(killed) if "loss" in r] == list(range(1, 25))


def test_the_training_figure_marks_growth_points(monkeypatch):
    from matplotlib.axes import Axes

    from distill.report import figures

    lines = []
    original = Axes.axvline
    monkeypatch.setattr(Axes, "axvline", lambda self, x=0, *a, **k: lines.append(x) or original(self, x, *a, **k))
    metrics = [{"step": s, "epoch": 0, "lr": 1e-3, "loss": 1 / s, "mse@8": 1 / s} for s in range(1, 11)]
    metrics.insert(5, {"step": 5, "epoch": 0, "event": "grow", "layers": [2, 4], "loss_before": 0.2, "loss_after": 0.3})
    png = figures.training(SimpleNamespace(metrics=metrics))
    assert png.startswith(b"\x89PNG") and lines == [5, 5]  # one line in each panel: total loss, mse
