"""On a CUDA machine: bf16 labeling, bf16 training, and a GPU-trained student used on the CPU.

Deselected by default (marker ``gpu``); run with ``python -m pytest -m gpu`` where CUDA is available.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import distill
from distill.pipeline.run import RunConfig, run
from distill.pipeline.train import TrainConfig

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_labeling_in_bf16_agrees_with_fp32(tiny_texts):
    from distill.teachers import load_teacher

    bf16 = load_teacher("minilm", device="cuda")  # the default on CUDA
    fp32 = load_teacher("minilm", device="cuda", dtype="float32")
    assert bf16.dtype in (torch.bfloat16, torch.float16) and fp32.dtype == torch.float32
    assert bf16.identity() != fp32.identity()  # never mixed in one target store
    seqs, _ = bf16.tokenize(tiny_texts)
    a = bf16.embed_ids(seqs, batch_size=64)
    b = fp32.embed_ids(seqs, batch_size=64)
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"bf16 vs fp32 cosine: min {cos.min():.5f}, mean {cos.mean():.5f}")
    assert cos.min() >= 0.999
    _, flat_a, _ = bf16.embed_ids(seqs[:16], with_tokens=True)
    _, flat_b, _ = fp32.embed_ids(seqs[:16], with_tokens=True)
    a, b = flat_a.astype(np.float32), flat_b.astype(np.float32)
    tok_cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert tok_cos.min() >= 0.99


@pytest.mark.parametrize("student", ["static", "transformer"])
def test_students_train_in_bf16_and_encode_on_the_cpu(tmp_path, tiny_bert_dir, tiny_corpus, student):
    cfg = RunConfig(out=str(tmp_path / "run"), teacher=str(tiny_bert_dir), corpus=str(tiny_corpus), holdout=20,
                    dims=(8, 16, 32), targets_dir=str(tmp_path / "targets"), student=student, width=32, n_heads=2,
                    device="cuda", train=TrainConfig(epochs=2, batch_size=16, log_every=1, checkpoint_every=100))
    summary = run(cfg)
    steps = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["train"]["steps"] == len(steps) == 24 >= 20
    first = np.mean([s["loss"] for s in steps[:3]])
    last = np.mean([s["loss"] for s in steps[-3:]])
    assert last < first
    texts = [json.loads(ln) for ln in (tmp_path / "run" / "data" / "holdout.jsonl").read_text().splitlines()]
    on_cpu = distill.load(tmp_path / "run")  # loads on the CPU
    assert all(p.device.type == "cpu" for p in on_cpu.parameters())
    on_gpu = distill.load(tmp_path / "run", device="cuda")
    np.testing.assert_allclose(on_cpu.encode(texts, dim=16), on_gpu.encode(texts, dim=16), atol=1e-4)
