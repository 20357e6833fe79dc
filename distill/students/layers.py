"""The teacher-derived student: the teacher's own architecture with a subset of its layers, and a head.

A real Hugging Face model (BERT, MPNet, GPT-2, Llama-style: whatever ``AutoModel`` builds from the
teacher's config) with ``len(layers)`` layers, initialised from the teacher's chosen layers; the
teacher's pooling over its last hidden states; then a linear head to the student width. The head
starts as the run's PCA rotation (cut to the student width, scaled as the targets are), so a
student that keeps every layer *is* the teacher in the run's rotated space before any training,
and one that keeps fewer starts from the teacher's own weights, not from scratch.

Pooling then the head equals the head on every token state then pooling (the head is affine and
the pooling a weighted mean), so the same token states serve the token-level loss.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from distill.errors import DistillError
from distill.students.base import ContextualStudent, StudentConfig

# where the numbered layers sit in the state dicts of the architectures we know
_LAYER_KEY = re.compile(r"^(.*?\b(?:layer|layers|h|block|blocks))\.(\d+)\.(.*)$")
_DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def pick_layers(n_layers: int, depth: int | None = None, layers: list[int] | None = None) -> list[int]:
    """The teacher layers a derived student keeps: ``layers`` as named, or ``depth`` evenly spaced ones
    that always include the last (``depth`` 3 of 6: 1, 3, 5).

    :raises DistillError: a layer out of range, duplicates, or a depth outside 1..n_layers.
    """
    if layers:
        layers = [int(i) for i in layers]
        if sorted(set(layers)) != layers or layers[0] < 0 or layers[-1] >= n_layers:
            raise DistillError(f"--layers must name distinct teacher layers in ascending order, in 0..{n_layers - 1}, "
                               f"got {layers}")
        return layers
    depth = n_layers if depth is None else int(depth)
    if not 1 <= depth <= n_layers:
        raise DistillError(f"--depth must be between 1 and the teacher's {n_layers} layers, got {depth}")
    return [round((i + 1) * n_layers / depth) - 1 for i in range(depth)]


def teacher_depth(hf_config: dict) -> int:
    for key in _DEPTH_KEYS:
        if isinstance(hf_config.get(key), int):
            return hf_config[key]
    raise DistillError(f"cannot tell how many layers a {hf_config.get('model_type')} teacher has")


def derived_hf_config(hf_config: dict, depth: int) -> dict:
    """The teacher's config with ``depth`` layers (every key naming the depth is set)."""
    out = dict(hf_config)
    for key in _DEPTH_KEYS:
        if key in out:
            out[key] = depth
    for key in ("layer_types",):  # per-layer lists (some decoders) follow the kept layers
        if isinstance(out.get(key), list):
            out[key] = out[key][:depth]
    return out


def derived_weights(teacher_state: dict[str, torch.Tensor], layers: list[int]) -> dict[str, torch.Tensor]:
    """The teacher's state dict with layer ``layers[k]`` renumbered ``k`` and the other layers dropped."""
    new = {old: k for k, old in enumerate(layers)}
    out = {}
    for key, value in teacher_state.items():
        m = _LAYER_KEY.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(2)) in new:
            out[f"{m.group(1)}.{new[int(m.group(2))]}.{m.group(3)}"] = value
    return out


class LayersStudent(ContextualStudent):
    kind = "layers"

    def __init__(self, config: StudentConfig, tokenizer: Tokenizer):
        super().__init__(config, tokenizer)
        from transformers import AutoConfig, AutoModel

        if not config.hf_config:
            raise DistillError("a layers student needs the teacher's model config (hf_config)")
        hf = dict(config.hf_config)
        model_type = hf.pop("model_type")
        # transformers' default attention: sdpa where the architecture has it, eager where not (MPNet)
        self.encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **hf))
        hidden = int(self.encoder.config.hidden_size)
        self.head = nn.Linear(hidden, config.dim)  # (D_t -> D): the PCA rotation, cut and scaled, at first

    PRETRAINED_LR = 1 / 30  # the encoder's rate, relative to --lr (3e-3 -> 1e-4: fine-tuning, not training)
    HEAD_LR = 1 / 10

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": list(self.encoder.parameters()), "lr": lr * self.PRETRAINED_LR},
                {"params": list(self.head.parameters()), "lr": lr * self.HEAD_LR}]

    @property
    def layers(self) -> list[int]:
        return list(self.config.layers or [])

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        texts = [t.lower() for t in texts] if self.config.lowercase else list(texts)
        seqs = [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]
        limit = self.config.max_length
        # keep the closing special token when truncating, as the teacher's tokenizer does
        keep_last = self.config.sep_id is not None
        return [s if len(s) <= limit else (s[:limit - 1] + s[-1:] if keep_last else s[:limit]) for s in seqs]

    def init_from(self, state: dict[str, torch.Tensor], rotation: np.ndarray, mean: np.ndarray,
                  factors: np.ndarray) -> None:
        """Kept layers (and embeddings, final norms) from the teacher; the head = the run's PCA rotation.

        :param state: the teacher's weights with the kept layers renumbered (:func:`derived_weights`).
        :param rotation: (D_t, D_t) PCA components; ``mean`` (D_t,) and ``factors`` (D_t,) as the
            trainer applies them to targets: ``((x - mean) @ rotation) * factors``.
        """
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise DistillError(f"the teacher's weights do not fit the derived model: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        D = self.dim
        w = rotation[:, :D] * factors[:D]  # (D_t, D)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            self.head.bias.copy_(torch.from_numpy(-(mean @ w)).float())

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T) ids and mask -> (pooled (B, D), token states (B, T, D)); the token states only in training
        mode (the token loss reads them; inference would pay a (B, T, D) projection to throw away)."""
        from distill.teachers.pooling import Pooling, pool

        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, D_t)
        pooled = pool(hidden, mask, Pooling(self.config.pooling))  # (B, D_t)
        if self.config.normalize:  # the teacher normalizes its pooled vector (sentence-transformers Normalize)
            pooled = F.normalize(pooled, dim=-1)
        return self.head(pooled), self.head(hidden) if self.training else None
