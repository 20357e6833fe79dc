import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

import distill
from distill.errors import DistillError
from distill.students import StaticStudent, StudentConfig, TransformerStudent
from distill.students.export import export_sentence_transformers

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(60)]
TEXTS = ["w1 w2 w3", "w4 w5", "w1 w1 w7 w8 w9 w10", "w33", "w12 w40 w41 w59 w2", "w0 w3 w9"]


def _tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _static(seed: int = 0) -> StaticStudent:
    torch.manual_seed(seed)
    s = StaticStudent(StudentConfig(kind="static", vocab_size=len(WORDS), dim=16, dims=[4, 8, 16]), _tokenizer())
    with torch.no_grad():
        s.embedding.normal_()
        s.log_weight.normal_(std=0.5)
    return s


def _transformer(seed: int = 0) -> TransformerStudent:
    torch.manual_seed(seed)
    cfg = StudentConfig(kind="transformer", vocab_size=len(WORDS), dim=16, dims=[4, 8, 16], width=32, n_layers=2,
                        n_heads=4, max_length=16)
    s = TransformerStudent(cfg, _tokenizer()).eval()
    with torch.no_grad():  # a trained-looking student: static rows, weights and a non-zero context head
        s.embedding.normal_()
        s.log_weight.normal_(std=0.5)
        s.head.weight.normal_(std=0.5)
    return s


def test_static_numpy_inference_equals_the_torch_forward():
    s = _static()
    seqs = s.tokenize(TEXTS)
    lengths = [len(q) for q in seqs]
    ids = torch.tensor([i for q in seqs for i in q])
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    with torch.no_grad():
        expected = s(ids, offsets).numpy()
    assert np.allclose(s.embed_ids(seqs), expected, atol=1e-5)
    # a weighted mean by hand for one text
    w = s.log_weight.detach().exp().numpy()
    E = s.embedding.detach().numpy()
    q = seqs[2]
    assert np.allclose(expected[2], (w[q, None] * E[q]).sum(0) / w[q].sum(), atol=1e-5)


@pytest.mark.parametrize("make", [_static, _transformer])
def test_save_load_gives_identical_vectors(tmp_path, make):
    s = make()
    s.save(tmp_path / "student")
    loaded = distill.load(tmp_path / "student")
    assert type(loaded) is type(s)
    for dim in (None, 4, 8):
        assert np.array_equal(s.encode(TEXTS, dim=dim), loaded.encode(TEXTS, dim=dim))


@pytest.mark.parametrize("make", [_static, _transformer])
def test_encode_prefixes_are_renormalized_truncations(make):
    s = make()
    full = s.embed_ids(s.tokenize(TEXTS))
    for dim in (4, 8, 16):
        x = s.encode(TEXTS, dim=dim)
        assert x.shape == (len(TEXTS), dim) and x.dtype == np.float32
        assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
        ref = full[:, :dim] / np.linalg.norm(full[:, :dim], axis=1, keepdims=True)
        assert np.allclose(x, ref, atol=1e-5)


@pytest.mark.parametrize("dim", [0, 17, -3, 2.5])
def test_dim_outside_the_students_range_is_a_clear_error(dim):
    with pytest.raises(DistillError, match=r"dim must be between 1 and 16 .*nested sizes: 4, 8, 16"):
        _static().encode(TEXTS, dim=dim)


def test_load_of_a_folder_that_is_no_student_is_a_clear_error(tmp_path):
    with pytest.raises(DistillError, match="not a distill student folder"):
        distill.load(tmp_path)


def test_sentence_transformers_export_gives_the_same_vectors(tmp_path):
    from sentence_transformers import SentenceTransformer

    s = _static()
    export_sentence_transformers(s, tmp_path / "st")
    for dim in (None, 8):
        st = SentenceTransformer(str(tmp_path / "st"), device="cpu", truncate_dim=dim)
        got = st.encode(TEXTS, normalize_embeddings=True)
        assert np.allclose(got, s.encode(TEXTS, dim=dim), atol=1e-5)


def test_an_untrained_transformer_student_is_its_static_student():
    s = _transformer()
    with torch.no_grad():
        s.head.weight.zero_()
    static = _static()
    static.load_state_dict({"embedding": s.embedding, "log_weight": s.log_weight})
    seqs = s.tokenize(TEXTS)  # with [CLS]/[SEP]: give them no weight, as init does for tokens without targets
    with torch.no_grad():
        s.log_weight[[WORDS.index("[CLS]"), WORDS.index("[SEP]")]] = -30.0
        static.log_weight.copy_(s.log_weight)
    assert np.allclose(s.embed_ids(seqs), static.embed_ids(seqs), atol=1e-5)


def test_transformer_student_pads_without_changing_vectors():
    s = _transformer()
    alone = np.concatenate([s.embed_ids([q]) for q in s.tokenize(TEXTS)])
    batched = s.embed_ids(s.tokenize(TEXTS))
    assert np.allclose(alone, batched, atol=1e-5)


@pytest.mark.parametrize("make", [_static, _transformer])
@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_embed_rows_line_up_with_the_input_records(tmp_path, make, suffix):
    import pandas as pd
    from typer.testing import CliRunner

    from distill.cli import app

    student = make()
    student.save(tmp_path / "s")
    corpus = tmp_path / "c.txt"
    lines = [TEXTS[0], "", TEXTS[1], "   ", TEXTS[2]]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / f"vecs{suffix}"
    result = CliRunner().invoke(app, ["embed", "--model", str(tmp_path / "s"), "--corpus", str(corpus),
                                      "--out", str(out), "--dim", "8", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 5 x 8 vectors" in result.output
    if suffix == ".npy":
        x = np.load(out)
    else:
        table = pd.read_parquet(out)
        assert table["text"].tolist() == [t.strip() for t in lines]
        x = np.stack(table["embedding"].to_numpy())
    assert x.shape == (5, 8) and x.dtype == np.float32
    expected = student.encode([TEXTS[0], TEXTS[1], TEXTS[2]], dim=8)
    np.testing.assert_allclose(x[[0, 2, 4]], expected, atol=1e-6)  # row i is record i
    assert not x[[1, 3]].any()  # empty records: zero vectors
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_damaged_student_config_is_a_clear_error(tmp_path):
    _static().save(tmp_path / "s")
    config = tmp_path / "s" / "distill_student.json"
    data = __import__("json").loads(config.read_text())
    config.write_text(__import__("json").dumps({**data, "rope_theta": 10000}))
    with pytest.raises(DistillError, match="unknown student options rope_theta"):
        distill.load(tmp_path / "s")
    config.write_text('{"kind": "static", "vocab_')
    with pytest.raises(DistillError, match="is not valid JSON"):
        distill.load(tmp_path / "s")


@pytest.mark.parametrize(("content", "match"), [
    ("caf\u00e9\tx\ty\tz\t1.0\ta\tb\n".encode("latin-1"), r"not UTF-8 \(byte 3\)"),
    (b'{"sentence1": "a", "sentence2": "b", "score": 1}\n{broken\n', r"line 2 is not valid JSON"),
    (b'["a", "b", 1]\n', r"line 1 is not a JSON object"),
    (b'{"sentence1": "a", "sentence2": "b", "score": "high"}\n', r"row 1 needs sentence1, sentence2 and a numeric"),
])
def test_malformed_pairs_files_are_user_errors(tmp_path, content, match):
    from distill.pipeline.evaluate import read_pairs

    path = tmp_path / ("pairs.jsonl" if content.startswith((b"{", b"[")) else "pairs.csv")
    path.write_bytes(content)
    with pytest.raises(DistillError, match=match):
        read_pairs(path)


def test_the_word_cache_gives_the_tokenizer_paths_vectors():
    from tokenizers import Tokenizer

    from distill.students import StaticStudent, StudentConfig
    from distill.students.base import normalize
    from distill.students.static import bag_means
    from distill.teachers.registry import resolve_teacher

    folder = resolve_teacher("minilm").path  # a lower-casing WordPiece tokenizer, shipped with distill
    tokenizer = Tokenizer.from_file(str(next(folder.rglob("tokenizer.json"))))
    V = tokenizer.get_vocab_size()
    student = StaticStudent(StudentConfig(kind="static", vocab_size=V, dim=16, dims=[8, 16]), tokenizer)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        student.embedding.copy_(torch.randn(V, 16, generator=g))
        student.log_weight.copy_(torch.randn(V, generator=g))
    texts = ["The cat sat on the mat.", "Pharmacokinetics of ibuprofen, 2,000 mg/day (n=12)!", "",
             "snake_case and CamelCase x-ray C++ e.g. U.S.", "Café crème", "a\x01b", "tab\there\nline",
             "a [MASK] token", "[cls] lower-case special", "x" * 150, "   ", "don't won't it's"]
    texts += [t.upper() for t in texts]
    table, w = student._tables()
    expected = normalize(bag_means(table, w, student.tokenize(texts)))
    assert student._words is None
    for _ in range(2):  # cold (words go through the tokenizer once), then warm (from the cache)
        np.testing.assert_allclose(student.encode(texts), expected, atol=1e-6)
    assert student._words is not None and "pharmacokinetics" in student._words.index
    with torch.no_grad():  # new weights: the cache is rebuilt, not reused
        student.embedding.mul_(2.0).add_(1.0)
    student.train(False)
    table, w = student._tables()
    np.testing.assert_allclose(student.encode(texts), normalize(bag_means(table, w, student.tokenize(texts))),
                               atol=1e-6)
