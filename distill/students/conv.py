"""The conv-merging student: a derived (layers) student whose later layers attend over merged tokens.

The teacher's embeddings and its first ``merge_after`` kept layers run over all T positions; then a
strided convolution merges every ``merge`` (k) neighbouring token states into one, and the remaining
kept layers run over about T/k positions: their attention costs (T/k)^2 instead of T^2, and their
projections and feed-forward blocks about k times less. Long texts gain the most; at k=1 the student *is*
the layers student of the same layers (the convolution is then the identity).

Choices, and why:

- **The special tokens are kept apart**: position 0 (BERT's [CLS], RoBERTa's and MPNet's <s>), as
  Funnel-Transformer's ``separate_cls`` does, and the closing one ([SEP], </s>). Encoders use them as
  attention sinks and CLS pooling reads the first, so they are not averaged with the text's words
  (on MiniLM, as initialised: STS-B dev 51.6 -> 53.9 with [SEP] kept apart too).
- **A full convolution, initialised as the mean** of its k inputs (weight ``I / k`` at each tap, no
  bias): at initialisation the merge is average pooling, so the student starts from the teacher's
  own states, merged; training may then learn to weigh and mix the k inputs. It costs about a tenth
  of one layer at T positions (hidden x hidden x k weights over T/k positions).
- **Padding never leaks in.** Padded states are zeroed before the merge; a window with n < k real
  tokens (the last one of a text) is rescaled by k / n, so it stays the mean of its real tokens at
  initialisation; a merged position is real when any of its tokens is. A text then gets the same
  vector alone or in a batch padded by longer texts.
- **Pooling stays the teacher's.** Mean pooling weighs each merged position by its number of real
  tokens, so it remains a mean over tokens (exactly so at initialisation, before the merged layers
  change the states); CLS pooling reads position 0; max pooling takes the real merged positions.
- **Text targets only.** The student has T/k states where the teacher has T, so the teacher's
  contextual token states do not line up with them; the run trains on text vectors alone (and says so).
- **BERT-like encoders only** (bert, roberta, xlm-roberta, mpnet): the forward pass calls the
  model's embeddings and layers one by one, which needs to know each architecture's layer call.
  MPNet's relative position bias is recomputed for the merged positions from their first tokens'
  positions, so distances stay counted in tokens. Decoders (causal attention, last-token pooling)
  are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from distill.errors import DistillError
from distill.students.base import StudentConfig
from distill.students.layers import LayersStudent

SUPPORTED = ("bert", "roberta", "xlm-roberta", "mpnet")  # encoders whose layers we know how to call one by one
POOLINGS = ("mean", "cls", "max")


def check_encoder(hf_config: dict, pooling: str | None = None) -> None:
    """Refuse a teacher the conv student cannot be derived from.

    :raises DistillError: a model type outside :data:`SUPPORTED`, a decoder, or a pooling outside
        :data:`POOLINGS`.
    """
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED or hf_config.get("is_decoder"):
        raise DistillError(f"--student conv needs a BERT-like encoder teacher ({', '.join(SUPPORTED)}); this "
                           f"teacher is a {model_type} {'decoder' if model_type not in SUPPORTED else 'model'}: "
                           "use --student layers for it")
    if pooling is not None and pooling not in POOLINGS:
        raise DistillError(f"--student conv pools by {', '.join(POOLINGS)}; this teacher pools by {pooling}")


def check_merge(merge: int, merge_after: int, n_kept: int) -> None:
    """:raises DistillError: ``merge`` below 1, or ``merge_after`` leaving no kept layer to run merged."""
    if merge < 1:
        raise DistillError(f"--merge must be at least 1 (tokens per merged position), got {merge}")
    if not 0 <= merge_after < n_kept:
        raise DistillError(f"--merge-after must be between 0 and {n_kept - 1} (the student keeps {n_kept} teacher "
                           f"layers and at least one must run on the merged positions), got {merge_after}")


def check_teacher(hf_config: dict, pooling: str, merge: int, merge_after: int, depth: int | None = None,
                  layers: list[int] | tuple[int, ...] | None = None) -> None:
    """Everything :func:`check_encoder` and :func:`check_merge` refuse, for the layers ``depth`` or ``layers``
    pick from this teacher: a run calls it before labeling anything."""
    from distill.students.layers import pick_layers, teacher_depth

    check_encoder(hf_config, pooling)
    check_merge(merge, merge_after, len(pick_layers(teacher_depth(hf_config), depth, list(layers) if layers else None)))


class ConvStudent(LayersStudent):
    """A :class:`LayersStudent` (same encoder, weights, tokenizer, head and their initialisation) whose
    layers after the first ``merge_after`` run on tokens merged ``merge`` at a time."""

    kind = "conv"

    def __init__(self, config: StudentConfig, tokenizer: Tokenizer):
        check_encoder(config.hf_config or {}, config.pooling)
        super().__init__(config, tokenizer)
        check_merge(config.merge, config.merge_after, len(self.encoder.encoder.layer))
        hidden = int(self.encoder.config.hidden_size)
        k = config.merge
        self.merge = nn.Conv1d(hidden, hidden, kernel_size=k, stride=k, bias=False)  # (B, H, T-1) -> (B, H, T'-1)
        with torch.no_grad():  # average pooling: tap t maps channel c to channel c with weight 1/k
            self.merge.weight.copy_(torch.eye(hidden).unsqueeze(-1).expand(hidden, hidden, k) / k)

    def param_groups(self, lr: float) -> list[dict]:
        groups = super().param_groups(lr)
        groups[-1]["params"] = groups[-1]["params"] + list(self.merge.parameters())  # new weights: the head's rate
        return groups

    # ---- the forward pass ---------------------------------------------------------------------------
    def _mask(self, x: torch.Tensor, mask: torch.Tensor):
        """The (B, T) 0/1 mask in the form the encoder's attention takes (None: attend everywhere)."""
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.encoder.config, inputs_embeds=x, attention_mask=mask)

    def _run(self, layers, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``layers`` over (B, T, H) states: (B, T) ``mask`` marks the real ones, (B, T) ``positions`` their tokens'."""
        attention_mask = self._mask(x, mask)
        if self.encoder.config.model_type == "mpnet":  # relative position bias, from token positions
            bias = self._mpnet_bias(positions)  # (B, heads, T, T)
            for layer in layers:
                x = layer(x, attention_mask, bias)[0]
            return x
        for layer in layers:
            out = layer(x, attention_mask)
            x = out[0] if isinstance(out, tuple) else out
        return x

    def _mpnet_bias(self, positions: torch.Tensor) -> torch.Tensor:
        """MPNet's relative position bias (B, heads, T, T) between (B, T) token positions: what its encoder
        computes for positions 0..T-1 (its own ``position_ids`` path does not take a batch)."""
        encoder = self.encoder.encoder
        relative = positions[:, None, :] - positions[:, :, None]  # (B, T, T)
        bucket = encoder.relative_position_bucket(relative)  # its default buckets, as compute_position_bias uses
        return encoder.relative_attention_bias(bucket).permute(0, 3, 1, 2)  # (B, heads, T, T)

    def merge_states(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Merge (B, T, H) states k at a time, all but the first and (with a closing special token) the last.

        Layout of the result: position 0, then the merged windows of positions 1.., then the text's last
        token (its [SEP]) in the last column, after any padding: attention does not see the order (the
        positions went in with the embeddings), and a fixed column keeps the layout the same for a text
        whatever else is in the batch.

        :returns: states (B, T', H), the real tokens each position holds (B, T') and each position's first
            token position (B, T'), with T' = 1 + ceil((T - 1) / k) (+ 1 with the last kept apart).
        """
        k = self.config.merge
        B, T, H = x.shape
        rows = torch.arange(B, device=x.device)
        lengths = mask.sum(1)  # (B,)
        body = mask.clone()
        pieces, counts, positions = [x[:, :1]], [mask[:, :1]], [torch.zeros_like(mask[:, :1])]
        if self.config.sep_id is not None:  # the closing special token, an attention sink like [CLS]: kept apart
            last = (lengths - 1).clamp(min=0)  # (B,)
            has_last = (lengths > 1).to(mask.dtype)  # (B,) a text of one token has only position 0
            body[rows, last] = body[rows, last] * (1 - has_last)
            last_state = x[rows, last] * has_last.unsqueeze(-1).to(x.dtype)  # (B, H)
        x = x * body.unsqueeze(-1).to(x.dtype)  # pads (and the last) zeroed: the batch's padding never leaks in
        rest, rest_mask = x[:, 1:], body[:, 1:]  # (B, T-1, H), (B, T-1): position 0 is kept apart
        pad = (-(T - 1)) % k if T > 1 else k
        rest = F.pad(rest, (0, 0, 0, pad))  # (B, k * W, H): W windows
        rest_mask = F.pad(rest_mask, (0, pad))  # (B, k * W)
        n = rest_mask.view(B, -1, k).sum(-1)  # (B, W) real tokens per window
        merged = self.merge(rest.transpose(1, 2)).transpose(1, 2)  # (B, W, H)
        # a window with n < k real tokens: k / n makes it the mean of its real tokens (at initialisation)
        pieces.append(merged * (k / n.clamp(min=1).to(merged.dtype)).unsqueeze(-1))
        counts.append(n)
        positions.append((1 + k * torch.arange(n.shape[1], device=x.device)).expand(B, -1))
        if self.config.sep_id is not None:
            pieces.append(last_state.unsqueeze(1))  # (B, 1, H)
            counts.append(has_last.unsqueeze(1))
            positions.append(last.unsqueeze(1))
        return torch.cat(pieces, 1), torch.cat(counts, 1), torch.cat(positions, 1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(B, T) ids and mask -> (pooled (B, D), None): no token states (they are T/k, not T)."""
        from distill.teachers.pooling import Pooling, pool

        layers = self.encoder.encoder.layer
        after = self.config.merge_after
        x = self.encoder.embeddings(input_ids=ids)  # (B, T, H)
        T = ids.shape[1]
        x = self._run(layers[:after], x, mask, torch.arange(T, device=ids.device).expand(len(ids), T))
        x, counts, positions = self.merge_states(x, mask)  # (B, T', H), (B, T'), (B, T')
        merged_mask = (counts > 0).long()  # (B, T')
        x = self._run(layers[after:], x, merged_mask, positions)
        if self.config.pooling == "mean":  # weighted by tokens per position: still a mean over tokens
            w = counts.to(x.dtype).unsqueeze(-1)  # (B, T', 1)
            pooled = (x * w).sum(1) / w.sum(1).clamp(min=1e-9)  # (B, H)
        else:
            pooled = pool(x, merged_mask, Pooling(self.config.pooling))  # (B, H)
        if self.config.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return self.head(pooled), None
