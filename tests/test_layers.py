"""The teacher-derived student (--student layers): the teacher's own architecture, fewer layers."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import distill
from distill.errors import DistillError
from distill.pipeline.pca import PCARotation
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig
from distill.students.layers import derived_weights, pick_layers
from distill.teachers import load_teacher


def _run(tmp_path, teacher, corpus, name, epochs=0, **extra):
    cfg = RunConfig(out=str(tmp_path / name), teacher=str(teacher), corpus=str(corpus), holdout=20,
                    dims=(8, 16, 32), targets_dir=str(tmp_path / "targets"), student="layers",
                    train=TrainConfig(epochs=epochs, batch_size=16, log_every=1), **extra)
    return run(cfg)


def test_pick_layers_spreads_them_and_keeps_the_last():
    assert pick_layers(6, 3) == [1, 3, 5] and pick_layers(6, 2) == [2, 5] and pick_layers(6, 1) == [5]
    assert pick_layers(6) == list(range(6)) and pick_layers(6, layers=[0, 2, 4]) == [0, 2, 4]
    with pytest.raises(DistillError, match="--depth must be between 1 and the teacher's 6"):
        pick_layers(6, 7)
    with pytest.raises(DistillError, match="distinct teacher layers in ascending order"):
        pick_layers(6, layers=[2, 2])


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_gpt2_dir"])
def test_a_derived_student_starts_as_the_teacher(tmp_path, tiny_corpus, tiny_texts, fixture, request):
    teacher_dir = request.getfixturevalue(fixture)
    _run(tmp_path, teacher_dir, tiny_corpus, "all")  # every layer kept, no training step
    teacher = load_teacher(teacher_dir, device="cpu")
    student = distill.load(tmp_path / "all")
    assert student.kind == "layers" and type(student.encoder).__name__ == type(teacher.model).__name__
    pca = PCARotation.load(tmp_path / "all" / "pca.npz")
    texts = tiny_texts[:40]
    rotated = pca.transform(teacher.embed_texts(texts))[:, :32]
    expected = rotated / np.linalg.norm(rotated, axis=1, keepdims=True)
    np.testing.assert_allclose(student.encode(texts), expected, atol=1e-5)

    # depth 1: the teacher's last layer, renumbered 0, and the embeddings, as they were
    _run(tmp_path, teacher_dir, tiny_corpus, "one", depth=1)
    one = distill.load(tmp_path / "one")
    n = teacher.model.config.num_hidden_layers
    assert one.layers == [n - 1]
    want = derived_weights(teacher.model.state_dict(), [n - 1])
    got = one.encoder.state_dict()
    assert set(want) <= set(got)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    again = distill.load(tmp_path / "one")  # save -> load gives the same vectors
    np.testing.assert_array_equal(again.encode(texts), one.encode(texts))


def test_a_derived_student_trains(tmp_path, tiny_bert_dir, tiny_corpus):
    summary = _run(tmp_path, tiny_bert_dir, tiny_corpus, "trained", epochs=3, depth=1)
    steps = [json.loads(line) for line in (tmp_path / "trained" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["loss"] < steps[0]["loss"] and "token" in steps[-1]
    held = summary["holdout"]
    assert held["student"]["32"]["overlap@10"] >= held["init"]["32"]["overlap@10"] - 0.02
    assert set(load_file(str(tmp_path / "trained" / "data" / "layers-init.safetensors"))) >= {
        "embeddings.word_embeddings.weight"}


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_gpt2_dir"])
def test_a_derived_student_exports_to_sentence_transformers(tmp_path, tiny_corpus, tiny_texts, fixture, request):
    from sentence_transformers import SentenceTransformer

    _run(tmp_path, request.getfixturevalue(fixture), tiny_corpus, "st", epochs=1, depth=1)
    student = distill.load(tmp_path / "st")
    texts = tiny_texts[:30]
    for d in (8, 32):
        st = SentenceTransformer(str(tmp_path / "st" / "student-st"), truncate_dim=d, device="cpu")
        got = st.encode(texts, convert_to_numpy=True)
        got = got / np.linalg.norm(got, axis=1, keepdims=True)
        np.testing.assert_allclose(got, student.encode(texts, dim=d), atol=1e-4)
    card = (tmp_path / "st" / "student-st" / "README.md").read_text()
    assert card.startswith("---")


def test_the_service_serves_a_derived_student(tmp_path, tiny_bert_dir, tiny_corpus, tiny_texts):
    from fastapi.testclient import TestClient

    from distill.service.app import create_app
    from distill.service.settings import ServiceSettings

    _run(tmp_path, tiny_bert_dir, tiny_corpus, "served", depth=1)
    student = distill.load(tmp_path / "served")
    long_text = " ".join(tiny_texts[:60])  # past the teacher's 128 tokens: cut as the student cuts it
    with TestClient(create_app(ServiceSettings(model=str(tmp_path / "served")))) as client:
        r = client.post("/v1/embeddings", json={"input": [tiny_texts[0], long_text], "dimensions": 8})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, student.encode([tiny_texts[0], long_text], dim=8), atol=1e-5)
