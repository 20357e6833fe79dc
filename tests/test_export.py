"""Export formats: Model2Vec, ONNX, float16/int8 tables, model cards (tiny random students, offline)."""

import json

import numpy as np
import pytest
import torch
import yaml
from tokenizers import Tokenizer

import distill
from distill.errors import DistillError
from distill.students import StaticStudent, StudentConfig, TransformerStudent
from distill.students.card import front_matter
from distill.students.export import export_student

TEACHER = {"name": "sentence-transformers/all-MiniLM-L6-v2", "dim": 32}
LONG = "the old man paints the long bridge " * 6  # past a transformer's max_length of 24


@pytest.fixture(scope="module")
def bert_tokenizer(tiny_bert_dir) -> Tokenizer:
    """The tiny BERT's WordPiece tokenizer: lower-casing, [UNK], [CLS] ... [SEP] around a text."""
    return Tokenizer.from_file(str(tiny_bert_dir / "tokenizer.json"))


def _static(tok: Tokenizer, teacher: dict = TEACHER) -> StaticStudent:
    torch.manual_seed(0)
    cfg = StudentConfig(kind="static", vocab_size=tok.get_vocab_size(), dim=16, dims=[4, 8, 16], teacher=teacher)
    s = StaticStudent(cfg, Tokenizer.from_str(tok.to_str()))
    with torch.no_grad():
        s.embedding.normal_()
        s.log_weight.normal_(std=0.5)
    return s.eval()


def _transformer(tok: Tokenizer) -> TransformerStudent:
    torch.manual_seed(0)
    cfg = StudentConfig(kind="transformer", vocab_size=tok.get_vocab_size(), dim=16, dims=[4, 8, 16], teacher=TEACHER,
                        width=32, n_layers=2, n_heads=4, max_length=24, pad_id=0, cls_id=2, sep_id=3)
    s = TransformerStudent(cfg, Tokenizer.from_str(tok.to_str())).eval()
    with torch.no_grad():  # a trained-looking student: the context head is not zero
        s.embedding.normal_()
        s.log_weight.normal_(std=0.5)
        s.head.weight.normal_(std=0.5)
    return s


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ---- Model2Vec -------------------------------------------------------------------------------------------------
def test_model2vec_export_gives_the_students_vectors(tmp_path, bert_tokenizer, tiny_texts):
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    s = _static(bert_tokenizer)
    texts = tiny_texts[:60] + ["", "a"]
    export_student(s, tmp_path / "m2v", "model2vec")
    for dim in (None, 8):
        model = StaticModel.from_pretrained(tmp_path / "m2v", dimensionality=dim)
        np.testing.assert_allclose(model.encode(texts), s.encode(texts, dim=dim), atol=1e-5)
    # sentence-transformers reads a Model2Vec folder too
    st = SentenceTransformer(str(tmp_path / "m2v"), device="cpu", truncate_dim=8)
    np.testing.assert_allclose(st.encode(texts[:-2], normalize_embeddings=True), s.encode(texts[:-2], dim=8), atol=1e-5)


def test_model2vec_drops_the_unknown_token_that_the_student_keeps(tmp_path, bert_tokenizer):
    from model2vec import StaticModel

    s = _static(bert_tokenizer)
    export_student(s, tmp_path / "m2v", "model2vec")
    text = "the cat sees a \u263a today"  # the smiley is not in the vocabulary: [UNK]
    ids = s.tokenize([text])[0]
    unk = bert_tokenizer.token_to_id("[UNK]")
    assert unk in ids
    got = StaticModel.from_pretrained(tmp_path / "m2v").encode([text])
    without_unk = s.embed_ids([[i for i in ids if i != unk]])
    np.testing.assert_allclose(got, without_unk / np.linalg.norm(without_unk), atol=1e-5)
    assert not np.allclose(got, s.encode([text]), atol=1e-3)  # the difference the card documents


# table bytes per row vs float32's 4 D: float16 2 D; int8 D + a 4-byte scale, (16 + 4) / 64 = 0.31 at 16 dims
@pytest.mark.parametrize(("dtype", "min_cos", "size_ratio"), [("float16", 0.99999, 0.52), ("int8", 0.9995, 0.33)])
def test_model2vec_float16_and_int8_tables(tmp_path, bert_tokenizer, tiny_texts, dtype, min_cos, size_ratio):
    from model2vec import StaticModel

    s = _static(bert_tokenizer)
    export_student(s, tmp_path / "f32", "model2vec")
    export_student(s, tmp_path / dtype, "model2vec", dtype=dtype)
    model = StaticModel.from_pretrained(tmp_path / dtype)
    assert model.embedding.dtype == np.dtype(dtype)
    got = model.encode(tiny_texts).astype(np.float32)
    assert _cos(got, s.encode(tiny_texts)).min() > min_cos
    table = lambda folder: (folder / "model.safetensors").stat().st_size  # noqa: E731
    assert table(tmp_path / dtype) < size_ratio * table(tmp_path / "f32")


# ---- float16 / int8 native tables ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["static", "transformer"])
@pytest.mark.parametrize(("dtype", "min_cos", "atol"), [("float16", 0.99999, 2e-3), ("int8", 0.998, 5e-2)])
def test_native_float16_and_int8_tables_round_trip_through_load(tmp_path, bert_tokenizer, tiny_texts, kind, dtype,
                                                                min_cos, atol):
    s = _static(bert_tokenizer) if kind == "static" else _transformer(bert_tokenizer)
    texts = tiny_texts[:80] + [LONG]
    export_student(s, tmp_path / "f32", "native")
    export_student(s, tmp_path / dtype, "native", dtype=dtype)
    loaded = distill.load(tmp_path / dtype)
    assert type(loaded) is type(s) and all(p.dtype == torch.float32 for p in loaded.parameters())
    for dim in (None, 4):
        got, want = loaded.encode(texts, dim=dim), s.encode(texts, dim=dim)
        assert _cos(got, want).min() > min_cos
        np.testing.assert_allclose(got, want, atol=atol)
    if kind == "static":  # per row: the table's D values at 4, 2 or 1 bytes; a float32 pooling weight; int8's scale
        V, D = s.config.vocab_size, s.dim
        per_row = {"float16": 2 * D + 4, "int8": D + 8}[dtype]
        size = (tmp_path / dtype / "model.safetensors").stat().st_size
        assert V * per_row < size < V * per_row + 512  # + the safetensors header
        assert size / (tmp_path / "f32" / "model.safetensors").stat().st_size < per_row / (4 * D + 4) + 0.02


def test_int8_rows_keep_their_own_scale():
    from distill.students.export import dequantize, quantize_rows

    x = np.array([[1.0, -0.5, 0.25], [1e-3, 2e-3, -4e-3], [0.0, 0.0, 0.0]], dtype=np.float32)
    q, scale = quantize_rows(x)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    back = dequantize({"t": torch.from_numpy(q), "t.int8_scale": torch.from_numpy(scale)})["t"].numpy()
    assert (np.abs(back - x) <= np.abs(x).max(axis=1, keepdims=True) / 254 + 1e-9).all()  # half a step per row
    assert np.abs(back[1]).min() > 0  # a small row is not rounded away, as one scale per table would


# ---- ONNX ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["static", "transformer"])
def test_onnx_export_gives_the_students_vectors(tmp_path, bert_tokenizer, tiny_texts, kind):
    import onnxruntime as ort

    s = _static(bert_tokenizer) if kind == "static" else _transformer(bert_tokenizer)
    export_student(s, tmp_path / "onnx", "onnx")
    tok = Tokenizer.from_file(str(tmp_path / "onnx" / "tokenizer.json"))
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    for texts in (tiny_texts[:7] + [LONG], tiny_texts[40:43], ["one"]):  # varying batch sizes and lengths
        enc = tok.encode_batch(texts)
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
        got = session.run(None, feeds)[0]
        assert got.shape == (len(texts), 16)
        np.testing.assert_allclose(got, s.encode(texts), atol=1e-4)
    config = json.loads((tmp_path / "onnx" / "distill_onnx.json").read_text())
    assert config["normalized"] is True and config["dims"] == [4, 8, 16]
    card = (tmp_path / "onnx" / "README.md").read_text()
    assert front_matter(card)["library_name"] == "onnx" and "ort.InferenceSession(" in card


# ---- model cards -----------------------------------------------------------------------------------------------
def _summary(dims) -> dict:
    return {"teacher": TEACHER, "dims": dims, "holdout_texts": 50, "train_texts": 450, "seconds": 12.0,
            "speed": {"texts": 50, "device": "cpu", "student_device": "cpu", "sentences_per_s": 20_000.0,
                      "teacher_sentences_per_s": 125.0, "speedup": 160.0},
            "size": {"student_parameters": 2_839, "teacher_parameters": 22_713_216},
            "holdout": {"student": {str(d): {"overlap@10": 0.5 + d / 100, "sim_spearman": 0.9} for d in dims}},
            "sts": {"student": {str(d): {"spearman": 70.0 + d, "pearson": 70.0} for d in dims},
                    "teacher_rotated": {str(d): {"spearman": 80.0 + d, "pearson": 80.0} for d in dims}}}


def test_stages_export_writes_cards_with_the_runs_numbers(tmp_path, bert_tokenizer):
    from types import SimpleNamespace

    from distill.pipeline import stages

    run = tmp_path / "run"
    s = _static(bert_tokenizer)
    s.save(run / "student")
    (run / "summary.json").write_text(json.dumps(_summary(s.dims)))
    stages.export(SimpleNamespace(out=str(run), student="static"))
    for folder, library in (("student", "distill"), ("student-st", "sentence-transformers")):
        text = (run / folder / "README.md").read_text()
        meta = yaml.safe_load(text.split("---\n")[1])
        assert meta["library_name"] == library and meta["pipeline_tag"] == "sentence-similarity"
        assert meta["base_model"] == TEACHER["name"]
        assert meta["license"] == "apache-2.0"  # from the bundled teacher's own card
        assert {"distill", "matryoshka", "embeddings"} <= set(meta["tags"])
        assert "| 8 | 0.580 | 0.900 |" in text and "| 8 | 78.0 | 88.0 |" in text  # quality per prefix
        assert "20,000 sentences/s on cpu, 160.0x the teacher's 125 sentences/s on cpu (50 held-out texts" in text
        assert ("truncate_dim=8" in text) == (library == "sentence-transformers")
    assert "distill.load(" in (run / "student" / "README.md").read_text()
    # the card's Model2Vec snippet for student-st/ holds
    from model2vec import StaticModel

    m2v = StaticModel.from_pretrained(run / "student-st", dimensionality=8, normalize=True)
    np.testing.assert_allclose(m2v.encode(["the cat sees a red house"]), s.encode(["the cat sees a red house"], dim=8),
                               atol=1e-5)


@pytest.mark.parametrize("fmt", ["native", "model2vec"])  # onnx's card: in the onnx test (an export takes seconds)
def test_cards_name_the_teacher_and_the_loaders(tmp_path, bert_tokenizer, fmt):
    s = _static(bert_tokenizer)
    export_student(s, tmp_path / fmt, fmt)
    text = (tmp_path / fmt / "README.md").read_text()
    meta = front_matter(text)
    assert meta["base_model"] == TEACHER["name"] and meta["tags"][:3] == ["distill", "matryoshka", "embeddings"]
    assert {"native": "distill.load(", "model2vec": "StaticModel.from_pretrained("}[fmt] in text
    assert "No run summary was found" in text


def test_card_license_from_a_local_teacher_folder_or_unknown(tmp_path, bert_tokenizer):
    teacher_dir = tmp_path / "my-teacher"
    teacher_dir.mkdir()
    (teacher_dir / "README.md").write_text("---\nlicense: mit\ntags: [x]\n---\n# a teacher\n")
    export_student(_static(bert_tokenizer, {"name": str(teacher_dir)}), tmp_path / "local", "native")
    text = (tmp_path / "local" / "README.md").read_text()
    meta = front_matter(text)
    assert meta["license"] == "mit" and "base_model" not in meta  # a local folder is no hub id
    assert "`my-teacher`" in text and str(tmp_path) not in text  # named, its path not leaked
    (teacher_dir / "README.md").unlink()
    export_student(_static(bert_tokenizer, {"name": str(teacher_dir)}), tmp_path / "unknown", "native")
    text = (tmp_path / "unknown" / "README.md").read_text()
    assert front_matter(text)["license"] == "other" and "license could not be determined" in text


# ---- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "fmt", "dtype", "match"), [
    ("static", "gguf", "float32", r"unknown export format 'gguf' \(choose from native, sentence-transformers, "
                                  r"model2vec, onnx\)"),
    ("static", "native", "int4", r"unknown dtype 'int4' \(choose from float32, float16, int8\)"),
    ("transformer", "model2vec", "float32", r"model2vec format holds one vector per token.*native or onnx"),
    ("transformer", "sentence-transformers", "float32", r"sentence-transformers format holds one vector per token"),
    ("static", "onnx", "int8", r"onnx format stores float32 only; --dtype int8 works with native, model2vec"),
])
def test_unsupported_exports_are_clear_errors(tmp_path, bert_tokenizer, kind, fmt, dtype, match):
    s = _static(bert_tokenizer) if kind == "static" else _transformer(bert_tokenizer)
    with pytest.raises(DistillError, match=match):
        export_student(s, tmp_path / "out", fmt, dtype)


def test_export_command_writes_the_format_and_reports_errors(tmp_path, bert_tokenizer):
    from typer.testing import CliRunner

    from distill.cli import app

    _transformer(bert_tokenizer).save(tmp_path / "s")
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "s"), "--out", str(tmp_path / "m"), "--format", "model2vec"])
    assert result.exit_code == 2 and "model2vec format holds one vector per token" in result.output
    result = runner.invoke(app, ["export", str(tmp_path / "s"), "--out", str(tmp_path / "n"), "--format", "native",
                                 "--dtype", "int8"])
    assert result.exit_code == 0, result.output
    assert front_matter((tmp_path / "n" / "README.md").read_text())["library_name"] == "distill"
    assert distill.load(tmp_path / "n").encode(["a cat"]).shape == (1, 16)
