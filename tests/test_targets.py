"""The target cache: content addressing, kill-and-resume, corruption, ragged tokens, vocab, accelerate."""

from __future__ import annotations

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
from distill.pipeline.targets import TargetKind, TargetStore, label, label_vocab
from distill.teachers import load_teacher
from distill.teachers.teacher import Teacher

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bert(tiny_bert_dir) -> Teacher:
    return load_teacher(tiny_bert_dir, device="cpu")


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under folder (relative path -> bytes), leaving out stale temporary files."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _cli_args(teacher_dir: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["targets", "--teacher", str(teacher_dir), "--corpus", str(corpus), "--out", str(out),
            "--device", "cpu", *extra]


def _store(root: Path, kind: str) -> Path:
    (folder,) = root.glob(f"{kind}-v2-*")
    return folder


def test_targets_are_cached_per_text(tiny_bert_dir, bert, tiny_texts, tmp_path, forward_calls):
    texts = tiny_texts[:20]
    first = label(bert, "text", tmp_path, texts, shard_size=8, batch_size=4, progress=False)
    assert forward_calls == [4] * 5  # 3 shards of 8, 8, 4 texts, in batches of 4
    folder = _store(tmp_path, "text")
    before = _files(folder)
    base = first.pooled()
    assert base.shape == (20, 32) and base.dtype == np.float32

    forward_calls.clear()
    again = label(bert, "text", tmp_path, list(reversed(texts)) + texts[:3], shard_size=5, progress=False)
    assert forward_calls == []  # reordered, duplicated, another shard size: nothing to label
    np.testing.assert_array_equal(again.pooled(), np.concatenate([base[::-1], base[:3]]))
    assert _files(folder) == before

    grown = texts + [texts[5] + "!"]  # the corpus grows by one text: only that one is labeled
    view = label(bert, "text", tmp_path, grown, shard_size=8, batch_size=4, progress=False)
    assert forward_calls == [1]
    np.testing.assert_array_equal(view.pooled(np.arange(20)), base)
    assert np.abs(view.pooled([20])[0] - base[5]).max() > 1e-4
    assert len(list(folder.glob("shard-*.json"))) == 4

    stores = {
        "pooling": label(load_teacher(tiny_bert_dir, device="cpu", pooling="cls"), "text", tmp_path, texts,
                         progress=False),
        "layer": label(load_teacher(tiny_bert_dir, device="cpu", layer=1), "text", tmp_path, texts, progress=False),
        "max_length": label(load_teacher(tiny_bert_dir, device="cpu", max_length=8), "text", tmp_path, texts,
                            progress=False),
        "dtype": label(load_teacher(tiny_bert_dir, device="cpu", dtype="bfloat16"), "text", tmp_path, texts,
                       progress=False),
        "kind": label(bert, "token", tmp_path, texts, progress=False),
    }
    assert len({first.store.folder, *(v.store.folder for v in stores.values())}) == 6
    for what, v in stores.items():
        if what != "kind":  # token targets carry the same pooled vectors, plus the states
            assert np.abs(v.pooled() - base).max() > 1e-4, what  # every change really changes the targets
    assert stores["dtype"].store.identity["dtype"] == "bfloat16" and first.store.identity["dtype"] == "float32"


def test_kill_and_resume_is_byte_identical(tiny_bert_dir, tiny_corpus, tmp_path):
    out = tmp_path / "killed"
    # The tiny model labels a shard in milliseconds: the wrapper sleeps after each shard so that the
    # kill surely lands mid-run. It is `python -m distill.cli` otherwise.
    wrapper = tmp_path / "slow_cli.py"
    wrapper.write_text(
        "import time\n"
        "import distill.pipeline.targets.labeling as targets\n"
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
        while not list(out.glob("text-v2-*/shard-*.json")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no shard after 60 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    text_dir = _store(out, "text")
    assert 1 <= len(list(text_dir.glob("shard-*.json"))) < 20  # killed mid-run

    done = subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "already in the cache; labeling" in done.stderr

    reference = tmp_path / "reference"
    result = CliRunner().invoke(app, _cli_args(tiny_bert_dir, tiny_corpus, reference, "--kinds", "text,token",
                                               "--shard-size", "10", "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    resumed, uninterrupted = _files(out), _files(reference)
    assert sorted(resumed) == sorted(uninterrupted)
    assert sum(name.endswith(".npy") for name in resumed) == 20 * 2 + 20 * 5  # text: keys, pooled; token: 5 files
    for name, data in uninterrupted.items():
        assert resumed[name] == data, name


@pytest.mark.parametrize("damage", ["flip", "truncate", "marker", "missing"])
def test_damaged_shard_is_labeled_again(bert, tiny_texts, tmp_path, forward_calls, damage):
    texts = tiny_texts[:40]
    view = label(bert, "token", tmp_path, texts, shard_size=10, batch_size=10, progress=False)
    folder = view.store.folder
    original = _files(folder)
    victim_name = view.names[view.shard[25]]  # the shard holding texts 20-29
    victim = folder / f"{victim_name}.tokens.npy"
    data = bytearray(victim.read_bytes())
    if damage == "flip":  # same size: only the full check sees it
        data[-40:-32] = bytes(b ^ 0xFF for b in data[-40:-32])
        victim.write_bytes(bytes(data))
        store = TargetStore.open(folder)
        assert store.verify() == [victim_name]
    elif damage == "truncate":
        victim.write_bytes(bytes(data[:-8]))
    elif damage == "marker":
        (folder / f"{victim_name}.json").write_text('{"count": 10, "fi')  # a torn marker
    else:
        victim.unlink()

    forward_calls.clear()
    again = label(bert, "token", tmp_path, texts, shard_size=10, batch_size=10, progress=False)
    assert forward_calls == [10]  # exactly the damaged shard, nothing else
    assert _files(folder) == original
    ids, states = again.token_slices(np.arange(20, 30))
    _, expected = view.token_slices(np.arange(20, 30))
    for a, b in zip(states, expected):
        np.testing.assert_array_equal(a, b)


def test_verify_command_reports_and_drops_bad_shards(tiny_bert_dir, tiny_corpus, tmp_path):
    out = tmp_path / "cache"
    result = CliRunner().invoke(app, _cli_args(tiny_bert_dir, tiny_corpus, out, "--shard-size", "50"))
    assert result.exit_code == 0, result.output
    ok = CliRunner().invoke(app, _cli_args(tiny_bert_dir, tiny_corpus, out, "--shard-size", "50", "--verify"))
    assert ok.exit_code == 0 and "4 shards verified, 0 bad" in ok.output
    victim = sorted(_store(out, "text").glob("shard-*.pooled.npy"))[1]
    data = bytearray(victim.read_bytes())
    data[-4:] = b"\x00\x00\xc0\x7f"
    victim.write_bytes(bytes(data))
    bad = CliRunner().invoke(app, _cli_args(tiny_bert_dir, tiny_corpus, out, "--shard-size", "50", "--verify"))
    assert bad.exit_code == 0, bad.output
    assert "3 shards verified, 1 bad (labeled again)" in bad.output
    assert TargetStore.open(_store(out, "text")).verify() == []


def test_token_targets_ragged_offsets(bert, tiny_texts, tmp_path):
    texts = tiny_texts[:30]
    view = label(bert, TargetKind.TOKEN, tmp_path, texts, shard_size=7, batch_size=4, progress=False)
    seqs, _ = bert.tokenize(texts)
    lengths = np.array([len(s) for s in seqs])
    assert view.kind is TargetKind.TOKEN and len(view.names) == 5
    np.testing.assert_array_equal(view.lengths(), lengths)
    ids, states = view.token_slices(np.arange(30))
    for i in range(30):
        assert ids[i].dtype == np.int32 and states[i].dtype == np.float16  # stored as float16
        np.testing.assert_array_equal(ids[i], seqs[i])
        assert states[i].shape == (lengths[i], 32)
        # mean pooling: each text's contextual states average to its pooled target (float16 rounding)
        np.testing.assert_allclose(states[i].astype(np.float32).mean(0), view.pooled([i])[0], atol=2e-3)
    _, flat, offsets = bert.embed_ids(seqs, with_tokens=True)
    np.testing.assert_allclose(np.concatenate(states).astype(np.float32), flat.astype(np.float32), atol=1e-5)


def test_vocab_targets(bert, tmp_path):
    vocab = label_vocab(bert, tmp_path, batch_size=64, progress=False)
    ids, strings = bert.vocab()
    assert vocab.pooled.shape == (len(ids), 32) == (159, 32)
    np.testing.assert_array_equal(vocab.ids, ids)
    assert vocab.strings == strings
    weight = bert.model.get_input_embeddings().weight.detach().numpy()
    np.testing.assert_array_equal(vocab.input_embeddings, weight[ids])
    for row in (0, 77, 158):  # each token alone, inside [CLS] … [SEP]
        alone = bert.embed_ids([[bert.tokenizer.cls_token_id, int(ids[row]), bert.tokenizer.sep_token_id]])[0]
        np.testing.assert_allclose(vocab.pooled[row], alone, atol=1e-5)
    assert np.abs(vocab.pooled[0] - vocab.pooled[1]).max() > 1e-3


def test_text_targets_need_texts(bert, tmp_path):
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="text targets need a non-empty list of texts"):
        label(bert, "text", tmp_path, [], progress=False)


def test_a_cache_of_the_old_layout_is_refused_with_what_to_do(bert, tiny_texts, tmp_path, caplog):
    from distill.errors import DistillError

    old = tmp_path / "text-0123456789abcdef0123"
    old.mkdir()
    (old / "manifest.json").write_text('{"format": 1, "kind": "text"}')
    (old / "shard-00000.pooled.npy").write_bytes(b"x" * 1000)
    with pytest.raises(DistillError, match="older distill .*format 1.*delete it"):
        TargetStore.open(old)
    with caplog.at_level("WARNING"):
        label(bert, "text", tmp_path, tiny_texts[:5], progress=False)
    assert "1 target sets in the old cache layout" in caplog.text and "delete them" in caplog.text


def test_the_weights_fingerprint_is_remembered(tiny_bert_dir, tmp_path, monkeypatch):
    import distill.teachers.teacher as teacher_module

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    calls = []
    original = teacher_module.weights_fingerprint
    monkeypatch.setattr(teacher_module, "weights_fingerprint", lambda f: calls.append(f) or original(f))
    a = load_teacher(tiny_bert_dir, device="cpu").fingerprint
    b = load_teacher(tiny_bert_dir, device="cpu").fingerprint
    assert a == b and len(calls) == 1  # hashed once, then remembered across loads
    assert (tmp_path / "cache" / "fingerprints.json").is_file()


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
    assert _files(tmp_path / "two").keys() == _files(one).keys()  # the same shards, named by their texts
    for kind in ("text", "token"):
        a, b = TargetStore.open(_store(tmp_path / "two", kind)), TargetStore.open(_store(one, kind))
        assert a.folder.name == b.folder.name  # same key: same teacher and settings
        assert len(a.shard_names()) == 8
        for name in a.shard_names():
            np.testing.assert_allclose(a.files(name).pooled, b.files(name).pooled, atol=1e-5)
            if kind == "token":
                np.testing.assert_array_equal(a.files(name).offsets, b.files(name).offsets)
                np.testing.assert_array_equal(a.files(name).ids, b.files(name).ids)
                np.testing.assert_allclose(a.files(name).tokens, b.files(name).tokens, atol=1e-3)
