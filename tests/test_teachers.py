"""Teachers: kinds, pooling, layers, truncation, vocabulary and fast failure for unknown specs."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch

from distill.errors import DistillError, TeacherNotFoundError
from distill.teachers import Pooling, TeacherKind, load_teacher
from distill.teachers.pooling import pool
from distill.teachers.registry import bundled_minilm_path

TEXTS = [
    "The cat sees a red house.",
    "A dog",
    "The old man paints three letters near the station and the river crosses the market again and again.",
    "Our team answers the map?",
    "The engineer builds the new machine with great care.",
]


def _hand_hidden(teacher, texts, layer=-1):
    """Reference forward pass straight through the Hugging Face model: (hidden (B, T, D), mask (B, T))."""
    batch = teacher.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = teacher.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=True)
    return out.hidden_states[layer].float(), batch["attention_mask"]


def test_minilm_matches_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    teacher = load_teacher("minilm", device="cpu")
    assert teacher.kind is TeacherKind.SENTENCE_TRANSFORMERS
    assert (teacher.pooling, teacher.normalize, teacher.max_length, teacher.dim) == (Pooling.MEAN, True, 256, 384)
    texts = TEXTS + ["word " * 400]  # one text past the 256-token limit: both truncate the same way
    ours = teacher.embed_texts(texts, batch_size=4)
    st = SentenceTransformer(str(bundled_minilm_path()), device="cpu")
    theirs = st.encode(texts, batch_size=4, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.parametrize("side", ["right", "left"])
def test_pool_last_and_cls_pick_real_tokens(side):
    hidden = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)  # (B=2, T=4, D=1): value = flat position
    if side == "right":
        mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
        last, first = [1, 7], [0, 4]
    else:
        mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
        last, first = [3, 7], [2, 4]
    assert pool(hidden, mask, Pooling.LAST).squeeze(-1).tolist() == last
    assert pool(hidden, mask, Pooling.CLS).squeeze(-1).tolist() == first
    assert pool(hidden, mask, Pooling.MEAN).squeeze(-1).tolist() == [(first[0] + last[0]) / 2, 5.5]
    assert pool(hidden, mask, Pooling.MAX).squeeze(-1).tolist() == last


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_decoder_last_pooling_under_padding(fixture, side, request):
    teacher = load_teacher(request.getfixturevalue(fixture), device="cpu")
    teacher.tokenizer.padding_side = side
    seqs, _ = teacher.tokenize(TEXTS)
    assert len({len(s) for s in seqs}) > 2  # the batch really is padded
    batched = teacher.embed_ids(seqs, batch_size=len(seqs))
    for row, s in enumerate(seqs):
        with torch.inference_mode():  # each sequence alone, no padding: its last token's state
            alone = teacher.model(input_ids=torch.tensor([s])).last_hidden_state[0, -1].float().numpy()
        np.testing.assert_allclose(batched[row], alone, atol=1e-5)
    # the contextual states come back unpadded and in order, whichever side the pads were on
    _, flat, offsets = teacher.embed_ids(seqs, batch_size=len(seqs), with_tokens=True)
    np.testing.assert_allclose(flat[offsets[1:] - 1], batched, rtol=1e-3, atol=1e-3)  # float16 states


def test_decoders_default_to_last_pooling(tiny_gpt2_dir, tiny_llama_dir, tiny_bert_dir):
    for folder in (tiny_gpt2_dir, tiny_llama_dir):
        teacher = load_teacher(folder, device="cpu")
        assert (teacher.kind, teacher.pooling) == (TeacherKind.DECODER, Pooling.LAST)
        assert teacher.tokenizer.pad_token_id is not None
    llama = load_teacher(tiny_llama_dir, device="cpu")
    assert llama.tokenize(["a dog"])[0][0][0] == llama.tokenizer.bos_token_id  # <s> kept in front
    bert = load_teacher(tiny_bert_dir, device="cpu")
    assert (bert.kind, bert.pooling) == (TeacherKind.ENCODER, Pooling.MEAN)
    assert load_teacher(tiny_gpt2_dir, device="cpu", pooling="mean").pooling is Pooling.MEAN


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_encoder_pooling_matches_hand_computation(tiny_bert_dir, pooling):
    teacher = load_teacher(tiny_bert_dir, device="cpu", pooling=pooling)
    hidden, mask = _hand_hidden(teacher, TEXTS)
    if pooling == "cls":
        expected = hidden[:, 0]
    else:
        m = mask.unsqueeze(-1).float()
        expected = (hidden * m).sum(1) / m.sum(1)
    ours = teacher.embed_texts(TEXTS, batch_size=2)
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-5)
    # and the two poolings really differ
    other = load_teacher(tiny_bert_dir, device="cpu", pooling="cls" if pooling == "mean" else "mean")
    assert np.abs(other.embed_texts(TEXTS) - ours).max() > 1e-3


def test_encode_is_normalized_prefix(tiny_bert_dir):
    teacher = load_teacher(tiny_bert_dir, device="cpu")
    raw = teacher.embed_texts(TEXTS)
    x = teacher.encode(TEXTS, dim=8)
    assert x.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(x, raw[:, :8] / np.linalg.norm(raw[:, :8], axis=1, keepdims=True), atol=1e-6)
    with pytest.raises(DistillError, match="dim must be in 1..32"):
        teacher.encode(TEXTS, dim=33)


@pytest.mark.parametrize("spec", ["no-such-org/no-such-model-xyz", "./no/such/folder", "bert-large"])
def test_unknown_teacher_fails_fast(spec):
    start = time.monotonic()
    with pytest.raises(TeacherNotFoundError) as info:
        load_teacher(spec, device="cpu")
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert repr(spec) in message and "local model folder" in message
    assert "\n" not in message


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(TeacherNotFoundError, match="has no config.json"):
        load_teacher(tmp_path, device="cpu")


def test_layer_selection(tiny_bert_dir):
    last = load_teacher(tiny_bert_dir, device="cpu").embed_texts(TEXTS)
    np.testing.assert_allclose(load_teacher(tiny_bert_dir, device="cpu", layer=2).embed_texts(TEXTS), last, atol=1e-6)
    first = load_teacher(tiny_bert_dir, device="cpu", layer=1)
    hidden, mask = _hand_hidden(first, TEXTS, layer=1)
    m = mask.unsqueeze(-1).float()
    np.testing.assert_allclose(first.embed_texts(TEXTS), ((hidden * m).sum(1) / m.sum(1)).numpy(), atol=1e-5)
    assert np.abs(first.embed_texts(TEXTS) - last).max() > 1e-3
    assert first.identity()["layer"] == 1
    with pytest.raises(DistillError, match="layer 3 out of range for a 2-layer teacher"):
        load_teacher(tiny_bert_dir, device="cpu", layer=3)


def test_unknown_pooling_is_a_user_error(tiny_bert_dir):
    with pytest.raises(DistillError, match="unknown pooling 'avg'"):
        load_teacher(tiny_bert_dir, device="cpu", pooling="avg")


def test_long_texts_are_truncated_and_counted(tiny_bert_dir, caplog):
    teacher = load_teacher(tiny_bert_dir, device="cpu", max_length=12)
    assert teacher.max_length == 12
    texts = ["a dog", "the cat sees the long bridge " * 10, "an apple " * 6]
    seqs, n_truncated = teacher.tokenize(texts)
    assert n_truncated == 2
    assert [len(s) for s in seqs] == [4, 12, 12]
    cls, sep = teacher.tokenizer.cls_token_id, teacher.tokenizer.sep_token_id
    assert all(s[0] == cls and s[-1] == sep for s in seqs)
    with caplog.at_level(logging.WARNING, logger="distill"):
        x = teacher.embed_texts(texts)
    assert x.shape == (3, 32) and np.isfinite(x).all()
    assert "2 of 3 texts were longer than 12 tokens" in caplog.text
    # the model's own limit (64 positions here) applies without max_length
    assert load_teacher(tiny_bert_dir, device="cpu").max_length == 64


def test_vocab_excludes_special_and_unused_tokens(tiny_bert_dir):
    teacher = load_teacher(tiny_bert_dir, device="cpu")
    ids, strings = teacher.vocab()
    full = teacher.tokenizer.get_vocab()
    assert len(ids) == len(strings) == len(full) - 8  # 5 special + 3 [unusedN]
    assert not {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused2]"} & set(strings)
    assert {"cat", "##a", "?"} <= set(strings)
    assert all(full[t] == i for i, t in zip(ids, strings, strict=True))
    assert (np.diff(ids) > 0).all()
    frame = teacher.frame([int(ids[0])])
    assert frame == [teacher.tokenizer.cls_token_id, int(ids[0]), teacher.tokenizer.sep_token_id]


def test_minilm_vocab_drops_unused():
    teacher = load_teacher("minilm", device="cpu")
    ids, strings = teacher.vocab()
    n_unused = sum(t.startswith("[unused") for t in teacher.tokenizer.get_vocab())
    assert n_unused == 994
    assert len(ids) == 30522 - n_unused - 5
    assert not any(t.startswith("[unused") or t in {"[CLS]", "[SEP]", "[PAD]"} for t in strings)


def test_unreachable_hub_fails_fast_even_when_dns_hangs(monkeypatch):
    """Online mode with a resolver that never answers: the probe gives up after its timeout."""
    import socket

    from huggingface_hub import constants

    def hanging_getaddrinfo(*args, **kwargs):  # no real lookup ever happens
        time.sleep(20)
        raise OSError("no resolver")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    start = time.monotonic()
    with pytest.raises(TeacherNotFoundError, match="hub cannot be reached"):
        load_teacher("no-such-org/no-such-model-xyz", device="cpu")
    assert time.monotonic() - start < 5


def _st_folder(src, dst, **extra_files):
    import shutil

    shutil.copytree(src, dst)
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                              "pooling_mode_mean_tokens": True}))
    for name, content in extra_files.items():
        (dst / name).write_text(json.dumps(content))
    return dst


def test_sentence_transformers_lower_casing_is_honoured(tmp_path, tiny_gpt2_dir):
    cased = load_teacher(_st_folder(tiny_gpt2_dir, tmp_path / "cased"), device="cpu")
    lower = load_teacher(_st_folder(tiny_gpt2_dir, tmp_path / "lower",
                                    **{"sentence_bert_config.json": {"max_seq_length": 64, "do_lower_case": True}}),
                         device="cpu")
    texts = ["The Cat sees A Red House.", "the cat sees a red house."]
    a = cased.embed_texts(texts)
    assert np.abs(a[0] - a[1]).max() > 1e-3  # a case-sensitive BPE: the cased teacher tells them apart
    b = lower.embed_texts(texts)
    np.testing.assert_allclose(b[0], b[1], atol=1e-6)  # lower-cased first, as SentenceTransformer.encode does
    np.testing.assert_allclose(b[1], a[1], atol=1e-5)
    assert lower.identity()["lowercase"] and not cased.identity()["lowercase"]  # never one target store


def test_sentence_transformers_prompts_are_applied_as_encode_applies_them(tmp_path, tiny_gpt2_dir):
    from distill.errors import DistillError

    folder = _st_folder(tiny_gpt2_dir, tmp_path / "e5", **{"config_sentence_transformers.json": {
        "prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": "query"}})
    plain = load_teacher(tiny_gpt2_dir, device="cpu", pooling="mean")
    texts = ["a red house", "the cat sees the dog"]
    default = load_teacher(folder, device="cpu")  # default_prompt_name: every text gets "query: "
    np.testing.assert_allclose(default.embed_texts(texts), plain.embed_texts(["query: " + t for t in texts]),
                               atol=1e-5)
    passage = load_teacher(folder, device="cpu", prompt="passage")
    np.testing.assert_allclose(passage.embed_texts(texts), plain.embed_texts(["passage: " + t for t in texts]),
                               atol=1e-5)
    bare = load_teacher(folder, device="cpu", prompt="none")
    np.testing.assert_allclose(bare.embed_texts(texts), plain.embed_texts(texts), atol=1e-5)
    # the prompt is part of the identity, so prompted and bare targets never share a store
    assert default.identity()["prompt"] == "query: " and "prompt" not in bare.identity()
    assert default.identity() != passage.identity()
    with pytest.raises(DistillError, match="no prompt named 'doc'.*'query', 'passage'"):
        load_teacher(folder, device="cpu", prompt="doc")
    with pytest.raises(DistillError, match="no prompt named 'query'.*none"):
        load_teacher(tiny_gpt2_dir, device="cpu", prompt="query")


def test_decoder_vocab_targets_are_framed_like_a_token_inside_a_text(tiny_gpt2_dir, tiny_llama_dir, tiny_bert_dir):
    import torch

    gpt2 = load_teacher(str(tiny_gpt2_dir))  # adds no BOS: a token alone would sit on the position-0 sink
    eot = gpt2.tokenizer.eos_token_id
    assert gpt2.vocab_context() == [eot]
    ids, _ = gpt2.vocab()
    ids = ids[:5]
    got = gpt2.vocab_targets(ids)
    for row, i in zip(got, ids):  # last pooling: the token's state after <|endoftext|>, at position 1
        with torch.no_grad():
            hidden = gpt2.model(input_ids=torch.tensor([[eot, int(i)]])).last_hidden_state[0, 1]
        np.testing.assert_allclose(row, hidden.numpy(), rtol=1e-5, atol=1e-5)
    alone = gpt2.embed_ids([[int(i)] for i in ids])  # the old framing: position 0
    assert not np.allclose(got, alone, atol=1e-3)

    mean = load_teacher(str(tiny_gpt2_dir), pooling="mean")  # the context token is not pooled
    np.testing.assert_allclose(mean.vocab_targets(ids), got, rtol=1e-5, atol=1e-5)

    # models that frame tokens themselves (BOS of a Llama tokenizer, [CLS] … [SEP]) get nothing added
    assert load_teacher(str(tiny_llama_dir)).vocab_context() == []
    assert load_teacher(str(tiny_bert_dir)).vocab_context() == []
