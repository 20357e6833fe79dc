"""What every student shares: its config, the encode contract, and its folder format.

A student folder holds ``distill_student.json`` (the config), ``model.safetensors`` and
``tokenizer.json``. ``encode(texts, dim)`` returns L2-normalized float32 vectors made of the first
``dim`` dims (re-normalized), for any ``dim`` up to the student's width.

A student distilled from a teacher with prompts (sentence-transformers ``prompts`` in
``config_sentence_transformers.json``) records them, and the name of the one its training texts were
labeled with (``default_prompt_name``); ``encode(texts, prompt_name="query")`` puts that prompt's text
before every text, as ``SentenceTransformer.encode`` does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch import nn

from distill.errors import DistillError
from distill.vectors import normalize  # noqa: F401  (students' callers import it from here)

CONFIG_NAME = "distill_student.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"


@dataclass
class StudentConfig:
    kind: str  # "static" | "transformer" | "layers" | "conv"
    vocab_size: int
    dim: int  # full output width D_s
    dims: list[int]  # nested prefix sizes, ascending, the last == dim
    teacher: dict = field(default_factory=dict)  # the teacher's identity
    # transformer students only
    width: int = 256
    n_layers: int = 2
    n_heads: int = 4
    max_length: int = 128
    pad_id: int = 0
    cls_id: int | None = None
    sep_id: int | None = None
    # layers students only: the teacher's model config with the kept depth, which teacher layers, its pooling
    hf_config: dict | None = None
    layers: list[int] | None = None
    pooling: str = "mean"
    normalize: bool = False  # the teacher L2-normalizes its pooled vector before the head
    lowercase: bool = False  # texts are lower-cased before tokenizing, as the teacher does
    # conv students only: tokens merged per position, and kept layers run before the merge (at full length)
    merge: int = 4
    merge_after: int = 1
    # the teacher's named prompts (as its config names them), and the one its targets were labeled with: the
    # student learned from texts with that prompt before them, so encode puts it there unless told otherwise
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    # static students: whole words of the training corpus added to the tokenizer as rows of their own
    # (--vocab-from-corpus), the last ``corpus_words`` ids of the table
    corpus_words: int = 0
    # the space the student's vectors live in: the fingerprint of its run's PCA rotation of the teacher
    # (``pca-<hash>``), shared with the teacher's rotated vectors (distill/pipeline/space.py); None in folders
    # written before students recorded it
    space: str | None = None

    def __post_init__(self) -> None:
        self.dims = sorted(int(d) for d in self.dims)
        if not self.dims or self.dims[-1] != self.dim or self.dims[0] < 1:
            raise DistillError(f"dims {self.dims} must be ascending positive sizes ending at the width {self.dim}")
        if not isinstance(self.prompts, dict) or not all(isinstance(v, str) for v in self.prompts.values()):
            raise DistillError(f"prompts must map prompt names to prompt texts, got {self.prompts!r}")
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise DistillError(f"default_prompt_name {self.default_prompt_name!r} is not one of the prompts "
                               f"({', '.join(map(repr, self.prompts)) or 'none'})")


# the prompt names each input type (a query, a document) stands for, first found wins ("passage": E5's name
# for documents); used by the service's ``input_type`` and by retrieval evaluation
INPUT_TYPE_PROMPTS = {"query": ("query",), "document": ("document", "passage")}


def input_type_prompt(prompts: dict[str, str], input_type: str) -> str | None:
    """The prompt text ``input_type`` puts before a text, or None when the model has no prompt of that kind.

    A model that prompts its queries but names no document prompt (bge, arctic-embed, mxbai: documents
    go bare) embeds documents without a prompt.
    """
    for name in INPUT_TYPE_PROMPTS[input_type]:
        if name in prompts:
            return prompts[name]
    if input_type == "document" and "query" in prompts:
        return ""
    return None




class Student(nn.Module):
    """Base class: subclasses implement ``tokenize``, ``embed_ids`` (numpy inference) and ``forward``."""

    kind = "base"

    def __init__(self, config: StudentConfig, tokenizer: Tokenizer):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def dims(self) -> list[int]:
        return list(self.config.dims)

    def identity(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "dims": self.dims, "teacher": self.config.teacher,
                "weights": self.fingerprint(), **({"space": self.config.space} if self.config.space else {})}

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def check_dim(self, dim: int | None) -> int:
        if dim is None:
            return self.dim
        if not isinstance(dim, (int, np.integer)) or not 0 < dim <= self.dim:
            raise DistillError(f"dim must be between 1 and {self.dim} for this student "
                               f"(nested sizes: {', '.join(map(str, self.dims))}), got {dim}")
        return int(dim)

    # ---- prompts ------------------------------------------------------------------------------------
    @property
    def prompts(self) -> dict[str, str]:
        """The teacher's named prompts this student records (name -> text put before a text)."""
        return dict(self.config.prompts)

    def prompt_text(self, prompt_name: str | None = None, prompt: str | None = None) -> str:
        """The text ``encode`` puts before every text, resolved as ``SentenceTransformer.encode`` resolves it.

        :param prompt_name: one of :attr:`prompts`; ``"none"``: no prompt; None: the default, the prompt
            the training targets were labeled with (``config.default_prompt_name``; none if they had none).
        :param prompt: a prompt text given as is; wins over ``prompt_name`` (``""``: no prompt).
        :raises DistillError: a name the student does not record.
        """
        if prompt is not None:
            return prompt
        if prompt_name is None:
            name = self.config.default_prompt_name
            return self.config.prompts.get(name, "") if name else ""
        if prompt_name == "none":
            return ""
        if prompt_name not in self.config.prompts:
            if not self.config.prompts:
                raise DistillError(f"this student has no prompt named {prompt_name!r}: it records no prompts (its "
                                   "teacher's config names none, or the student was made before students recorded "
                                   "them); leave prompt_name out")
            known = ", ".join(map(repr, self.config.prompts))
            raise DistillError(f"this student has no prompt named {prompt_name!r} (its prompts: {known}); pass one "
                               "of those, or prompt_name='none' for no prompt")
        return self.config.prompts[prompt_name]

    def with_prompt(self, texts: list[str] | str, prompt_name: str | None = None,
                    prompt: str | None = None) -> list[str]:
        """``texts`` as a list, each with the prompt of :meth:`prompt_text` before it."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        text = self.prompt_text(prompt_name, prompt)
        return [text + t for t in texts] if text else texts

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups; students with pretrained parts train those at a lower rate."""
        return [{"params": list(self.parameters()), "lr": lr}]

    # ---- the encode contract ----------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def embed_ids(self, seqs: list[list[int]]) -> np.ndarray:
        """Raw full-width vectors (N, dim) for token-id sequences (no normalization)."""
        raise NotImplementedError

    def encode(self, texts: list[str] | str, dim: int | None = None, batch_size: int = 1024,
               progress: bool = False, prompt_name: str | None = None, prompt: str | None = None) -> np.ndarray:
        """L2-normalized (N, dim) float32 vectors: the first ``dim`` dims of the student, re-normalized.

        :param prompt_name: a prompt the student records (``"query"``, ``"passage"``...), put before every
            text; ``"none"``: no prompt. Left out, the default prompt is put there, as
            ``SentenceTransformer.encode`` puts its ``default_prompt_name``: it is the prompt the training
            targets were labeled with, so the student learned its vectors from texts that had it, and the
            run's held-out scores measured it so. See :meth:`prompt_text`.
        :param prompt: a prompt text put before every text as is (wins over ``prompt_name``).
        :raises DistillError: when ``dim`` is outside 1..width, or ``prompt_name`` is not a recorded prompt.
        """
        from tqdm.auto import tqdm

        dim = self.check_dim(dim)
        texts = self.with_prompt(texts, prompt_name, prompt)
        seqs = self.tokenize(texts)
        # batches of similar length: a contextual student then pads little (a static one does not care)
        order = np.argsort([-len(q) for q in seqs], kind="stable")
        out = np.empty((len(texts), dim), dtype=np.float32)
        for start in tqdm(range(0, len(order), batch_size), disable=not progress, unit="batch"):
            idx = order[start:start + batch_size]
            out[idx] = normalize(self.embed_ids([seqs[i] for i in idx])[:, :dim])
        return out

    # ---- folder format ----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS_NAME)
        self.tokenizer.save(str(folder / TOKENIZER_NAME))
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))
        return folder


class ContextualStudent(Student):
    """Students whose vectors depend on context: ``forward(ids, mask) -> (pooled, token states)`` on padded batches."""

    def pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), width), self.config.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[row, : len(s)] = 1
        return ids, mask

    @torch.inference_mode()
    def embed_ids(self, seqs: list[list[int]], batch_size: int = 128) -> np.ndarray:
        device = next(self.parameters()).device
        out = np.zeros((len(seqs), self.dim), dtype=np.float32)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # length-sorted: little padding
        was_training = self.training
        self.eval()
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = self.pad([seqs[i] for i in idx])
            pooled, _ = self(ids.to(device), mask.to(device))
            out[idx] = pooled.float().cpu().numpy()
        self.train(was_training)
        return out


def read_config(folder: Path) -> StudentConfig:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise DistillError(f"{folder} is not a distill student folder (no {CONFIG_NAME})")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DistillError(f"{path} is not valid JSON ({e}); the student folder is damaged") from e
    from dataclasses import fields

    known = {f.name for f in fields(StudentConfig)}
    unknown = sorted(set(data) - known) if isinstance(data, dict) else []
    if not isinstance(data, dict) or unknown:
        raise DistillError(f"{path}: unknown student options {', '.join(unknown) or type(data).__name__} "
                           "(written by a newer distill?); upgrade distill or re-export the student")
    try:
        return StudentConfig(**data)
    except TypeError as e:
        raise DistillError(f"{path}: {e}") from e


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    from distill.students.tables import dequantize  # tables saved as int8/float16 by `distill export --dtype`

    return dequantize(load_file(str(folder / WEIGHTS_NAME)))


def load_tokenizer(folder: Path) -> Tokenizer:
    return Tokenizer.from_file(str(folder / TOKENIZER_NAME))
