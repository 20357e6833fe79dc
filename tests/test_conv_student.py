"""The conv-merging student (--student conv): the teacher's kept layers, the later ones over merged tokens."""

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

import distill
from distill.errors import DistillError
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig
from distill.students import StudentConfig, build_student
from distill.students.layers import derived_hf_config, derived_weights
from distill.teachers import load_teacher

LAYERS = [0, 1]  # both of the tiny teachers' layers: one at full length, one merged


def _derived(teacher_dir, kind: str, merge: int = 4, merge_after: int = 1):
    """A derived student of ``kind`` from the teacher in ``teacher_dir``, initialised as ``distill run`` does
    (the head: a fixed random rotation), in eval mode."""
    teacher = load_teacher(teacher_dir, device="cpu")
    hf = {k: v for k, v in derived_hf_config(teacher.model.config.to_dict(), len(LAYERS)).items()
          if not k.startswith("_") and k not in ("architectures", "torch_dtype", "dtype", "transformers_version")}
    tok = teacher.tokenizer
    config = StudentConfig(kind=kind, vocab_size=len(tok), dim=16, dims=[8, 16], hf_config=hf, layers=LAYERS,
                           max_length=teacher.max_length, pad_id=tok.pad_token_id or 0, cls_id=tok.cls_token_id,
                           sep_id=tok.sep_token_id, pooling=teacher.pooling.value, lowercase=teacher.lowercase,
                           merge=merge, merge_after=merge_after)
    student = build_student(config, Tokenizer.from_str(tok.backend_tokenizer.to_str()))
    D = teacher.dim
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((D, D)))[0].astype(np.float32)
    state = {k: v.float() for k, v in teacher.model.state_dict().items()}
    student.init_from(derived_weights(state, LAYERS), rotation, np.zeros(D, np.float32), np.ones(D, np.float32))
    return student.eval(), teacher


def _run(tmp_path, teacher, corpus, name, epochs=0, **extra):
    cfg = RunConfig(out=str(tmp_path / name), teacher=str(teacher), corpus=str(corpus), holdout=20,
                    dims=(8, 16, 32), targets_dir=str(tmp_path / "targets"), student="conv", merge=3,
                    train=TrainConfig(epochs=epochs, batch_size=16, log_every=1), **extra)
    return run(cfg)


@pytest.fixture(scope="module")
def tiny_mpnet_dir(tmp_path_factory, tiny_bert_dir):
    """A random-init MPNet (relative position bias in every layer) with the tiny BERT's tokenizer."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    folder = tmp_path_factory.mktemp("tiny-mpnet")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id)
    MPNetModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_mpnet_dir"])
def test_with_k_1_it_is_the_layers_student_and_its_layers_are_the_teachers(fixture, tiny_texts, request):
    teacher_dir = request.getfixturevalue(fixture)
    layers, teacher = _derived(teacher_dir, "layers")
    conv, _ = _derived(teacher_dir, "conv", merge=1)
    texts = tiny_texts[:40]
    np.testing.assert_allclose(conv.encode(texts), layers.encode(texts), atol=1e-5)
    merged, _ = _derived(teacher_dir, "conv", merge=4)
    assert np.abs(merged.encode(texts) - layers.encode(texts)).max() > 1e-3  # k=4 does merge something
    # before training the kept layers (and the embeddings) are the teacher's own, for any k
    want = derived_weights(teacher.model.state_dict(), LAYERS)
    got = merged.encoder.state_dict()
    assert {k for k in want if ".layer." in k} and set(want) <= set(got)
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    # and the merge starts as the mean of each k neighbours
    w = merged.merge.weight.detach()  # (H, H, k)
    assert torch.equal(w, torch.eye(w.shape[0]).unsqueeze(-1).expand_as(w) / 4)


def test_short_and_ragged_texts_are_padding_invariant(tiny_bert_dir):
    student, _ = _derived(tiny_bert_dir, "conv", merge=4)
    # [CLS] + 1, 2, 5 and 13 content tokens + [SEP]: shorter than k, and not a multiple of k
    texts = ["cat", "the cat", "the cat sees a dog", "the old man sees the cat and the dog crosses the long bridge"]
    alone = np.concatenate([student.encode([t]) for t in texts])
    together = student.encode(texts)  # padded to the longest text
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert np.isfinite(together).all() and np.abs(together[0] - together[1]).max() > 1e-4


def test_mean_pooling_weighs_merged_positions_by_their_tokens(tiny_bert_dir):
    student, _ = _derived(tiny_bert_dir, "conv", merge=4)
    # [CLS] + 6 tokens + [SEP] beside [CLS] + 2 tokens + [SEP] (padded): [CLS], windows of 4 and 2, [SEP]
    ids, mask = student.pad(student.tokenize(["the cat sees a red house", "a dog"]))
    x = torch.randn(2, ids.shape[1], 32)
    states, counts, positions = student.merge_states(x, mask)
    assert counts.tolist() == [[1, 4, 2, 1], [1, 2, 0, 1]]
    assert positions.tolist() == [[0, 1, 5, 7], [0, 1, 5, 3]]  # the last column: each text's [SEP]
    # at initialisation each merged state is its tokens' mean: the token-weighted mean is the plain token mean
    pooled = (states * counts.unsqueeze(-1)).sum(1) / counts.sum(1, keepdim=True)  # (2, H)
    torch.testing.assert_close(pooled[0], x[0].mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled[1], x[1, :4].mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(states[0, 2], x[0, 5:7].mean(0))  # a window of 2 real tokens: their mean, not half
    torch.testing.assert_close(states[1, 3], x[1, 3])  # [SEP] kept apart, whatever the padding after it


def test_run_trains_saves_and_loads_a_conv_student(tmp_path, tiny_bert_dir, tiny_corpus, tiny_texts, caplog,
                                                   monkeypatch):
    import distill.pipeline.run as run_module

    # the report's figures take ~40 s here and know nothing of the student's kind: not drawn
    monkeypatch.setattr(run_module, "write_report_safely", lambda out: None)
    caplog.set_level("INFO")
    summary = _run(tmp_path, tiny_bert_dir, tiny_corpus, "conv", epochs=2, depth=2)
    assert "trained on the teacher's text vectors only" in caplog.text
    steps = [json.loads(line) for line in (tmp_path / "conv" / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1]["loss"] < steps[0]["loss"] and "token" not in steps[-1]
    student = distill.load(tmp_path / "conv")
    assert student.kind == "conv" and student.config.merge == 3 and student.layers == [0, 1]
    init = distill.load(tmp_path / "conv" / "student-init")
    assert not torch.equal(student.merge.weight, init.merge.weight)  # the merge trained too
    assert summary["holdout"]["student"]["32"]["overlap@10"] > 0.3
    texts = tiny_texts[:30]
    again = distill.load(tmp_path / "conv")  # save -> load: the same vectors
    np.testing.assert_array_equal(again.encode(texts, dim=8), student.encode(texts, dim=8))
    assert not (tmp_path / "conv" / "student-st").exists()
    from fastapi.testclient import TestClient

    from distill.service.app import create_app
    from distill.service.settings import ServiceSettings

    with TestClient(create_app(ServiceSettings(model=str(tmp_path / "conv")))) as client:  # served as it encodes
        r = client.post("/v1/embeddings", json={"input": texts[:3], "dimensions": 8})
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, student.encode(texts[:3], dim=8), atol=1e-5)
    from distill.students.export import export_student

    with pytest.raises(DistillError, match="a conv student merges neighbouring token states"):
        export_student(student, tmp_path / "st", "sentence-transformers")
    with pytest.raises(DistillError, match="ONNX export does not take a conv student yet"):
        export_student(student, tmp_path / "onnx", "onnx")


def test_old_student_folders_load_without_the_merge_fields(tmp_path, tiny_bert_dir, tiny_texts):
    from distill.students.base import CONFIG_NAME

    student, _ = _derived(tiny_bert_dir, "layers")
    student.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / CONFIG_NAME).read_text())
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps({k: v for k, v in config.items()
                                                            if k not in ("merge", "merge_after")}))
    np.testing.assert_array_equal(distill.load(tmp_path / "old").encode(tiny_texts[:5]), student.encode(tiny_texts[:5]))


def test_a_decoder_teacher_or_a_bad_merge_is_refused(tmp_path, tiny_gpt2_dir, tiny_bert_dir, tiny_corpus):
    with pytest.raises(DistillError, match=r"--student conv needs a BERT-like encoder teacher \(bert, .*mpnet\); "
                                           "this teacher is a gpt2 decoder"):
        _run(tmp_path, tiny_gpt2_dir, tiny_corpus, "gpt2")
    assert not (tmp_path / "targets").exists()  # refused before any labeling
    with pytest.raises(DistillError, match="--merge-after must be between 0 and 1"):
        _run(tmp_path, tiny_bert_dir, tiny_corpus, "after", merge_after=2)
    assert not (tmp_path / "targets").exists()
    with pytest.raises(DistillError, match="--merge must be at least 1"):
        RunConfig(out="o", student="conv", merge=0)
