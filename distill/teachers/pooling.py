"""Pooling of hidden states into one vector per sequence."""

from __future__ import annotations

from enum import Enum

import torch


class Pooling(str, Enum):
    MEAN = "mean"
    CLS = "cls"
    LAST = "last"  # last non-pad token: the one that has seen the whole text in a causal model
    MAX = "max"


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool (B, T, D) hidden states under a (B, T) attention mask into (B, D).

    ``LAST`` finds the last position whose mask is 1, so it is right under left and right padding.
    """
    mask_f = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    if pooling is Pooling.MEAN:
        return (hidden * mask_f).sum(1) / mask_f.sum(1).clamp(min=1e-9)
    if pooling is Pooling.CLS:
        first = mask.long().argmax(dim=1)  # (B,) first real token: column 0 unless padded on the left
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    if pooling is Pooling.LAST:
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, T)
        last = (positions * mask.long()).argmax(dim=1)  # (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling is Pooling.MAX:
        return hidden.masked_fill(mask_f == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    raise ValueError(f"unknown pooling {pooling!r}")
