"""Export students to the formats people already use: the native folder (``distill.load``), a
sentence-transformers folder, a Model2Vec folder and ONNX; the per-token tables in float32, float16 or int8.

Every exported folder carries a model card (``README.md``, see :mod:`distill.students.card`).
"""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file
from torch import nn

from distill.errors import DistillError, choice
from distill.students.base import WEIGHTS_NAME, Student
from distill.students.layers import LayersStudent
from distill.students.static import StaticStudent
from distill.students.tables import SCALE_SUFFIX, dequantize, quantize_rows  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)
ONNX_NAME = "model.onnx"
ONNX_CONFIG_NAME = "distill_onnx.json"


class ExportFormat(str, Enum):
    NATIVE = "native"
    SENTENCE_TRANSFORMERS = "sentence-transformers"
    MODEL2VEC = "model2vec"
    ONNX = "onnx"


class TableDtype(str, Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"


# which table dtypes each format can hold
DTYPES = {ExportFormat.NATIVE: set(TableDtype), ExportFormat.MODEL2VEC: set(TableDtype),
          ExportFormat.SENTENCE_TRANSFORMERS: {TableDtype.FLOAT32}, ExportFormat.ONNX: {TableDtype.FLOAT32}}


def export_student(student: Student, folder: str | Path, fmt: str = "native", dtype: str = "float32",
                   summary: dict | None = None) -> Path:
    """Write ``student`` to ``folder`` in format ``fmt``, with a model card.

    :param fmt: native | sentence-transformers | model2vec | onnx.
    :param dtype: storage of the per-token tables: float32 | float16 | int8 (native and model2vec).
    :param summary: the run's ``summary.json`` (quality per prefix, shown on the card), or None.
    :raises DistillError: on an unknown format or dtype, or one the format or the student cannot take.
    """
    from distill.students.card import write_model_card

    fmt, dtype = choice(ExportFormat, fmt, "export format"), choice(TableDtype, dtype, "dtype")
    if dtype not in DTYPES[fmt]:
        takes = ", ".join(f.value for f, d in DTYPES.items() if dtype in d)
        raise DistillError(f"the {fmt.value} format stores float32 only; --dtype {dtype.value} works with {takes}")
    folder = Path(folder)
    if fmt is ExportFormat.NATIVE:
        save_native(student, folder, dtype)
    elif fmt is ExportFormat.SENTENCE_TRANSFORMERS:
        export_sentence_transformers(student, folder)
    elif fmt is ExportFormat.MODEL2VEC:
        export_model2vec(student, folder, dtype)
    else:
        export_onnx(student, folder)
    write_model_card(folder, student, summary, fmt.value, dtype=dtype.value)
    return folder


# ---- int8 / float16 tables (the formats are in distill.students.tables) --------------------------------
def _is_table(student: Student, name: str, t: torch.Tensor) -> bool:
    """The per-token tables: the (V, D) static rows, and a transformer's (V, width) token embedding."""
    return t.dim() == 2 and t.shape[0] == student.config.vocab_size and name in ("embedding", "token_embedding.weight")


def save_native(student: Student, folder: str | Path, dtype: str = "float32") -> Path:
    """The native folder (``distill.load``) with the per-token tables stored as ``dtype``; everything
    else (pooling weights, a transformer's layers) stays float32. ``distill.load`` dequantises on load."""
    dtype = TableDtype(dtype)
    folder = student.save(folder)
    if dtype is TableDtype.FLOAT32:
        return folder
    tensors = {}
    for name, t in student.state_dict().items():
        t = t.detach().cpu().float().contiguous()
        if _is_table(student, name, t) and dtype is TableDtype.FLOAT16:
            t = t.half()
        elif _is_table(student, name, t):
            q, scale = quantize_rows(t.numpy())
            t = torch.from_numpy(q)
            tensors[name + SCALE_SUFFIX] = torch.from_numpy(scale)
        tensors[name] = t
    save_file(tensors, folder / WEIGHTS_NAME, metadata={"format": "pt", "distill_tables": dtype.value})
    return folder


# ---- sentence-transformers ------------------------------------------------------------------------------
def export_sentence_transformers(student: Student, folder: str | Path) -> Path:
    """Write a folder that ``SentenceTransformer(folder, truncate_dim=d)`` loads, giving our vectors.

    A static student becomes StaticEmbedding + Normalize. StaticEmbedding takes a plain mean of the
    token rows, so the learned per-token weights are folded into the rows: the mean of ``w_t * E_t``
    points the same way as our weighted mean, and the vectors agree after normalization. Truncating a
    normalized vector keeps the direction of the truncated raw vector, so ``truncate_dim`` agrees too.
    The student's prompts go into ``config_sentence_transformers.json`` (``prompts``, ``default_prompt_name``):
    ``encode(texts, prompt_name=...)`` puts the same text before each text as ``student.encode`` does.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    if student.kind == "conv":  # a LayersStudent too, but its forward pass is not the HF model's
        raise DistillError("a conv student merges neighbouring token states between its layers, which no "
                           "sentence-transformers module does: export it as native or onnx")
    if isinstance(student, LayersStudent):
        return _export_layers_st(student, Path(folder))
    _static_only(student, ExportFormat.SENTENCE_TRANSFORMERS)
    table, _ = student._tables()
    module = StaticEmbedding(student.tokenizer, embedding_weights=torch.from_numpy(table.copy()))
    model = SentenceTransformer(modules=[module, Normalize()], device="cpu", **_st_prompts(student))
    folder = Path(folder)
    model.save(str(folder))
    return folder


def _st_prompts(student: Student) -> dict:
    """The student's prompts as ``SentenceTransformer(...)`` takes them: it saves them and applies the
    default one when ``encode`` is given none, as ``student.encode`` does."""
    return {"prompts": student.prompts, "default_prompt_name": student.config.default_prompt_name}


_ST_POOLING = {"mean": "mean", "cls": "cls", "last": "lasttoken", "max": "max"}


def _export_layers_st(student: LayersStudent, folder: Path) -> Path:
    """A layers student as Transformer + Pooling (+ Normalize) + Dense + Normalize: its encoder is a
    real Hugging Face model, so the folder is an ordinary sentence-transformers model."""
    import tempfile

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import PreTrainedTokenizerFast

    c = student.config
    tok = student.tokenizer

    def token(i):
        return tok.id_to_token(i) if i is not None else None

    with tempfile.TemporaryDirectory() as tmp:
        student.encoder.save_pretrained(tmp)
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=c.max_length,
                                         cls_token=token(c.cls_id), sep_token=token(c.sep_id),
                                         pad_token=token(c.pad_id))
        hf_tok.save_pretrained(tmp)
        modules = [Transformer(tmp, max_seq_length=c.max_length, do_lower_case=c.lowercase),
                   Pooling(student.encoder.config.hidden_size, pooling_mode=_ST_POOLING[c.pooling])]
        if c.normalize:
            modules.append(Normalize())
        dense = Dense(student.encoder.config.hidden_size, c.dim, bias=True, activation_function=nn.Identity())
        with torch.no_grad():
            dense.linear.weight.copy_(student.head.weight)
            dense.linear.bias.copy_(student.head.bias)
        model = SentenceTransformer(modules=[*modules, dense, Normalize()], device="cpu", **_st_prompts(student))
        model.save(str(folder))
    return folder


def _static_only(student: Student, fmt: ExportFormat) -> None:
    if not isinstance(student, StaticStudent):
        raise DistillError(f"the {fmt.value} format holds one vector per token, which a {student.kind} student "
                           "does not have (its vectors depend on context): export it as native or onnx")


# ---- Model2Vec --------------------------------------------------------------------------------------------
def export_model2vec(student: Student, folder: str | Path, dtype: str = "float32") -> Path:
    """Write what ``model2vec.StaticModel.from_pretrained(folder)`` loads (as model2vec's own
    ``save_pretrained`` writes it; model2vec itself is not needed).

    The rows hold ``w_t * E_t`` (the learned weights folded in, as Model2Vec folds its SIF weights):
    Model2Vec's plain mean then points the same way as the student's weighted mean, and with
    ``normalize: true`` the vectors agree; ``from_pretrained(folder, dimensionality=d)`` gives the
    prefix ``d``. int8 keeps one scale per row in Model2Vec's per-token ``weights`` tensor (which it
    multiplies into the rows), so it is the same int8 table as the native format's.

    One difference: Model2Vec drops the tokenizer's unknown token ([UNK]) from a text, the student
    keeps its row; texts without unknown tokens get the same vectors. No truncation (``max_length``
    null), as the student does not truncate.
    """
    _static_only(student, ExportFormat.MODEL2VEC)
    dtype = TableDtype(dtype)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table, _ = student._tables()  # (V, D) rows w_t * E_t
    tensors = {"embeddings": np.ascontiguousarray(table, dtype=np.float32)}
    if dtype is TableDtype.FLOAT16:
        tensors["embeddings"] = table.astype(np.float16)
    elif dtype is TableDtype.INT8:
        tensors["embeddings"], tensors["weights"] = quantize_rows(table)
    save_numpy(tensors, folder / "model.safetensors")
    student.tokenizer.save(str(folder / "tokenizer.json"), pretty=False)
    teacher = student.config.teacher.get("name")
    config = {"model_type": "model2vec", "architectures": ["StaticModel"], "tokenizer_name": teacher,
              "apply_pca": student.dim, "sif_coefficient": None, "hidden_dim": student.dim, "seq_length": 1000000,
              "normalize": True, "max_length": None, "embedding_dtype": dtype.value,
              "distill": {"kind": student.kind, "dims": student.dims}}
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    # what model2vec writes for sentence-transformers, which loads this folder too
    modules = [{"idx": 0, "name": "0", "path": ".", "type": "sentence_transformers.models.StaticEmbedding"},
               {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=4))
    (folder / "1_Normalize").mkdir(exist_ok=True)
    return folder


# ---- ONNX ---------------------------------------------------------------------------------------------------
class _StaticGraph(nn.Module):
    """The static student as padded (B, T) ids + mask -> (B, D), for export: a gather and a masked weighted mean."""

    def __init__(self, student: StaticStudent):
        super().__init__()
        table, w = student._tables()
        self.register_buffer("table", torch.from_numpy(table.copy()))  # (V, D) rows w_t * E_t
        self.register_buffer("weight", torch.from_numpy(w.copy()))  # (V,)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.to(self.table.dtype).unsqueeze(-1)  # (B, T, 1)
        summed = (self.table[input_ids] * m).sum(1)  # (B, D)
        norm = (self.weight[input_ids].unsqueeze(-1) * m).sum(1)  # (B, 1)
        return F.normalize(summed / norm.clamp(min=1e-12), dim=-1)


class _ContextualGraph(nn.Module):
    def __init__(self, student: Student):
        super().__init__()
        self.student = student

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.student(input_ids, attention_mask)  # (B, D)
        return F.normalize(pooled, dim=-1)


def onnx_tokenizer(student: Student):
    """The student's tokenizer set up to give ONNX inputs directly: padded to the longest text, special
    tokens as the student adds them (none for a static student), a transformer's texts cut to its
    ``max_length`` (the closing special token kept, as the student's own ``tokenize`` does). A tokenizer
    without a closing special token (GPT-2's) keeps the first ``max_length`` tokens of a longer text, where
    the student keeps the first ``max_length - 1`` and the last: such texts differ."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(student.tokenizer.to_str())
    if isinstance(student, StaticStudent):
        tok.post_processor = None  # the static student embeds the text's own tokens only
    else:
        tok.enable_truncation(student.config.max_length)
    pad_id = student.config.pad_id
    tok.enable_padding(pad_id=pad_id, pad_token=tok.id_to_token(pad_id) or "[PAD]")
    return tok


def export_onnx(student: Student, folder: str | Path, opset: int = 18) -> Path:
    """``model.onnx``: (input_ids, attention_mask), int64 (batch, sequence), both axes dynamic ->
    ``sentence_embedding`` (batch, D), the full-width vector **L2-normalized**; a prefix ``d`` is its
    first ``d`` dims re-normalized. Beside it ``tokenizer.json`` (already padding; see :func:`onnx_tokenizer`)
    and ``distill_onnx.json``.

    Uses the ``torch.export``-based exporter (``dynamo=True``, needs onnxscript); the TorchScript one is
    deprecated in this torch.
    """
    import contextlib
    import io
    import warnings

    if student.kind == "conv":
        raise DistillError("ONNX export does not take a conv student yet (torch.export cannot trace its merge of "
                           "a dynamic number of tokens): export it as native")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    graph = (_StaticGraph(student) if isinstance(student, StaticStudent) else _ContextualGraph(student)).cpu().eval()
    tok = onnx_tokenizer(student)
    # an example batch of two texts of different lengths: sizes of 1 (or equal sizes) would be specialised
    examples = tok.encode_batch(["a short text", "a somewhat longer text, for an example batch of two"])
    ids = torch.tensor([e.ids for e in examples], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in examples], dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # quiet: the exporter logs "torchvision is not installed", the optimizer each initializer it merges
    quiet = {name: logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")}
    levels = {name: log.level for name, log in quiet.items()}
    for log in quiet.values():
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (ids, mask), str(folder / ONNX_NAME), input_names=["input_ids", "attention_mask"],
                              output_names=["sentence_embedding"], opset_version=opset, dynamo=True,
                              external_data=False, verbose=False,
                              dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}})
    except ImportError as e:
        raise DistillError(f"ONNX export needs the onnx and onnxscript packages ({e}): "
                           "pip install onnx onnxscript") from e
    finally:
        for name, log in quiet.items():
            log.setLevel(levels[name])
    tok.save(str(folder / "tokenizer.json"))
    config = {"kind": student.kind, "dim": student.dim, "dims": student.dims,
              "inputs": ["input_ids", "attention_mask"], "output": "sentence_embedding", "normalized": True,
              "max_length": None if isinstance(student, StaticStudent) else student.config.max_length,
              "pad_id": student.config.pad_id, "teacher": student.config.teacher.get("name"),
              # not applied by the graph: put the prompt's text before each text before tokenizing
              "prompts": student.prompts, "default_prompt_name": student.config.default_prompt_name}
    (folder / ONNX_CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return folder
