"""What every student shares: its config, the encode contract, and its folder format.

A student folder holds ``distill_student.json`` (the config), ``model.safetensors`` and
``tokenizer.json``. ``encode(texts, dim)`` returns L2-normalized float32 vectors made of the first
``dim`` dims (re-normalized), for any ``dim`` up to the student's width.
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

CONFIG_NAME = "distill_student.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"


@dataclass
class StudentConfig:
    kind: str  # "static" | "transformer" | "layers"
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

    def __post_init__(self) -> None:
        self.dims = sorted(int(d) for d in self.dims)
        if not self.dims or self.dims[-1] != self.dim or self.dims[0] < 1:
            raise DistillError(f"dims {self.dims} must be ascending positive sizes ending at the width {self.dim}")


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
                "weights": self.fingerprint()}

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
               progress: bool = False) -> np.ndarray:
        """L2-normalized (N, dim) float32 vectors: the first ``dim`` dims of the student, re-normalized.

        :raises DistillError: when ``dim`` is outside 1..width.
        """
        from tqdm.auto import tqdm

        dim = self.check_dim(dim)
        if isinstance(texts, str):
            texts = [texts]
        seqs = self.tokenize(list(texts))
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
