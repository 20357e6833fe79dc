"""The target cache: content addressing, kill-and-resume, corruption, ragged tokens, vocab, accelerate."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.pipeline.targets import TargetKind, build_targets, load_targets
from distill.teachers import load_teacher
from distill.teachers.teacher import Teacher

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bert(tiny_bert_dir) -> Teacher:
    return load_teacher(tiny_bert_dir, device="cpu")


@pytest.fixture
def forward_calls(monkeypatch) -> list[int]:
    """Counts the teacher's forward passes: one entry (the batch size) per call."""
    calls: list[int] = []
    original = Teacher.forward

    def counting(self, seqs):
        calls.append(len(seqs))
        return original(self, seqs)

    monkeypatch.setattr(Teacher, "forward", counting)
    return calls


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under folder (relative path -> bytes), leaving out stale temporary files."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _cli_args(teacher_dir: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["targets", "--teacher", str(teacher_dir), "--corpus", str(corpus), "--out", str(out),
            "--device", "cpu", *extra]


def test_content_addressing(tiny_bert_dir, bert, tiny_texts, tmp_path, forward_calls):
    texts = tiny_texts[:20]
    first = build_targets(bert, "text", tmp_path, texts=texts, shard_size=8, batch_size=4, progress=False)
    assert forward_calls == [4] * 5  # 3 shards of 8, 8, 4 texts, in batches of 4
    before = _files(first)

    forward_calls.clear()
    again = build_targets(bert, "text", tmp_path, texts=list(texts), shard_size=8, batch_size=4, progress=False)
    assert again == first and forward_calls == []  # reused: no forward pass at all
    assert _files(first) == before

    changed = texts[:5] + [texts[5] + "!"] + texts[6:]
    folders = {
        "text": build_targets(bert, "text", tmp_path, texts=changed, shard_size=8, progress=False),
        "pooling": build_targets(load_teacher(tiny_bert_dir, device="cpu", pooling="cls"), "text", tmp_path,
                                 texts=texts, shard_size=8, progress=False),
        "layer": build_targets(load_teacher(tiny_bert_dir, device="cpu", layer=1), "text", tmp_path,
                               texts=texts, shard_size=8, progress=False),
        "max_length": build_targets(load_teacher(tiny_bert_dir, device="cpu", max_length=8), "text", tmp_path,
                                    texts=texts, shard_size=8, progress=False),
        "kind": build_targets(bert, "token", tmp_path, texts=texts, shard_size=8, progress=False),
    }
    assert len({first, *folders.values()}) == 6
    base = load_targets(first).pooled
    for what, folder in folders.items():
        t = load_targets(folder)
        assert t.manifest["count"] == 20, what
        if what != "kind":  # token targets carry the same pooled vectors, plus the states
            assert np.abs(t.pooled - base).max() > 1e-4, what  # every change really changes the targets
    # a changed text changes its own row only
    diff = np.abs(load_targets(folders["text"]).pooled - base).max(axis=1)
    assert diff[5] > 1e-4 and np.delete(diff, 5).max() < 1e-5  # (batch padding moves the others by ~1e-7)


def test_kill_and_resume_is_byte_identical(tiny_bert_dir, tiny_corpus, tmp_path):
    out = tmp_path / "killed"
    # The tiny model labels a shard in milliseconds: the wrapper sleeps after each shard so that the
    # kill surely lands mid-run. It is `python -m distill.cli` otherwise.
    wrapper = tmp_path / "slow_cli.py"
    wrapper.write_text(
        "import time\n"
        "import distill.pipeline.targets as targets\n"
        "label = targets._label_shard\n"
        "def slow(*args, **kwargs):\n"
        "    label(*args, **kwargs)\n"
        "    time.sleep(0.2)\n"
        "targets._label_shard = slow\n"
        "from distill.cli import main\n"
        "main()\n"
    )
    args = _cli_args(tiny_bert_dir, tiny_corpus, out, "--kinds", "text,token", "--shard-size", "10",
                     "--batch-size", "4")
    proc = subprocess.Popen([sys.executable, str(wrapper), *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("text-*/shard-00000.json")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shard after 60 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    (text_dir,) = out.glob("text-*")
    assert not (text_dir / "manifest.json").exists()
    assert 1 <= len(list(text_dir.glob("shard-*.json"))) < 20  # killed mid-run

    done = subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resuming:" in done.stderr and "shards already complete" in done.stderr

    reference = tmp_path / "reference"
    result = CliRunner().invoke(app, _cli_args(tiny_bert_dir, tiny_corpus, reference, "--kinds", "text,token",
                                               "--shard-size", "10", "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    resumed, uninterrupted = _files(out), _files(reference)
    assert sorted(resumed) == sorted(uninterrupted)
    assert sum(name.endswith(".npy") for name in resumed) == 20 + 20 * 4  # text: pooled; token: 4 files
    for name, data in uninterrupted.items():
        assert resumed[name] == data, name


@pytest.mark.parametrize("damage", ["flip", "marker", "missing"])
@pytest.mark.parametrize("keep_manifest", [True, False])
def test_corrupt_shard_is_redone(bert, tiny_texts, tmp_path, forward_calls, damage, keep_manifest):
    texts = tiny_texts[:40]
    folder = build_targets(bert, "token", tmp_path, texts=texts, shard_size=10, batch_size=10, progress=False)
    original = _files(folder)
    victim = folder / "shard-00002.tokens.npy"
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[-40:-32] = bytes(b ^ 0xFF for b in data[-40:-32])  # flip bytes inside the float data
        victim.write_bytes(bytes(data))
    elif damage == "marker":
        (folder / "shard-00002.json").write_text('{"count": 10, "fi')  # a torn marker
    else:
        victim.unlink()
    if not keep_manifest:
        (folder / "manifest.json").unlink()

    forward_calls.clear()
    again = build_targets(bert, "token", tmp_path, texts=texts, shard_size=10, batch_size=10, progress=False)
    assert again == folder
    assert forward_calls == [10]  # exactly the damaged shard, nothing else
    assert _files(folder) == original
    loaded = load_targets(folder)
    np.testing.assert_array_equal(loaded.tokens[loaded.offsets[20]:loaded.offsets[30]],
                                  np.load(folder / "shard-00002.tokens.npy"))


def test_token_targets_ragged_offsets(bert, tiny_texts, tmp_path):
    texts = tiny_texts[:30]
    folder = build_targets(bert, TargetKind.TOKEN, tmp_path, texts=texts, shard_size=7, batch_size=4,
                           progress=False)
    t = load_targets(folder)
    seqs, _ = bert.tokenize(texts)
    lengths = np.array([len(s) for s in seqs])
    assert t.kind is TargetKind.TOKEN and len(t.manifest["shards"]) == 5
    assert t.offsets.shape == (31,) and t.offsets[0] == 0
    np.testing.assert_array_equal(np.diff(t.offsets), lengths)
    assert t.tokens.shape == (lengths.sum(), 32) and t.tokens.dtype == np.float32
    np.testing.assert_array_equal(t.ids, np.concatenate(seqs))
    assert t.pooled.shape == (30, 32)
    for i in range(30):  # mean pooling: each text's slice of contextual states averages to its pooled target
        np.testing.assert_allclose(t.tokens[t.offsets[i]:t.offsets[i + 1]].mean(0), t.pooled[i], atol=1e-5)
    _, flat, offsets = bert.embed_ids(seqs, with_tokens=True)
    np.testing.assert_array_equal(offsets, t.offsets)
    np.testing.assert_allclose(flat, t.tokens, atol=1e-5)


def test_vocab_targets(bert, tmp_path):
    folder = build_targets(bert, "vocab", tmp_path, shard_size=50, batch_size=64, progress=False)
    t = load_targets(folder)
    ids, strings = bert.vocab()
    assert t.kind is TargetKind.VOCAB
    assert t.pooled.shape == (len(ids), 32) == (159, 32)
    np.testing.assert_array_equal(t.ids, ids)
    assert t.strings == strings
    weight = bert.model.get_input_embeddings().weight.detach().numpy()
    assert t.input_embeddings.shape == (159, 32)
    np.testing.assert_array_equal(t.input_embeddings, weight[ids])
    for row in (0, 77, 158):  # each token alone, inside [CLS] … [SEP]
        alone = bert.embed_ids([[bert.tokenizer.cls_token_id, int(ids[row]), bert.tokenizer.sep_token_id]])[0]
        np.testing.assert_allclose(t.pooled[row], alone, atol=1e-5)
    assert np.abs(t.pooled[0] - t.pooled[1]).max() > 1e-3


def test_text_targets_need_texts(bert, tmp_path):
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="text targets need a non-empty list of texts"):
        build_targets(bert, "text", tmp_path, texts=[], progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_two_processes_match_one(tiny_bert_dir, tiny_corpus, tmp_path):
    args = _cli_args(tiny_bert_dir, tiny_corpus, tmp_path / "two", "--kinds", "text,token", "--shard-size", "25",
                     "--batch-size", "8")
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is set up; torchrun (what
    # `accelerate launch --multi_gpu` runs) starts two, which distill joins into a gloo group on CPU
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(_free_port()), "-m", "distill.cli", *args]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):  # both ranks labeled their half of the 8 shards
        assert f"rank {rank} of 2 labels 4 of 8 text shards" in done.stderr
    one = tmp_path / "one"
    result = CliRunner().invoke(app, _cli_args(tiny_bert_dir, tiny_corpus, one, "--kinds", "text,token",
                                               "--shard-size", "25", "--batch-size", "8"))
    assert result.exit_code == 0, result.output
    for kind in ("text", "token"):
        (a,) = (tmp_path / "two").glob(f"{kind}-*")
        (b,) = one.glob(f"{kind}-*")
        assert a.name == b.name  # same key: same teacher, texts and settings
        ta, tb = load_targets(a), load_targets(b)
        assert ta.manifest["count"] == tb.manifest["count"] == 200
        assert len(ta.manifest["shards"]) == 8
        np.testing.assert_allclose(ta.pooled, tb.pooled, atol=1e-5)
        if kind == "token":
            np.testing.assert_array_equal(ta.offsets, tb.offsets)
            np.testing.assert_array_equal(ta.ids, tb.ids)
            np.testing.assert_allclose(ta.tokens, tb.tokens, atol=1e-5)
    assert json.loads((a / "manifest.json").read_text())["teacher"] == tb.manifest["teacher"]
