"""Token-level term for contextual students: each token state vs the teacher's contextual state."""

import torch
import torch.nn.functional as F
from torch import nn


class TokenCosineLoss(nn.Module):
    def forward(self, student: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, d) student states, (B, T, >= d) targets, (B, T) mask -> mean (1 - cos) over real tokens."""
        d = student.shape[-1]
        cos = F.cosine_similarity(student, target[..., :d], dim=-1, eps=1e-8)  # (B, T)
        m = mask.to(cos.dtype)
        return ((1 - cos) * m).sum() / m.sum().clamp(min=1.0)

    def get_config_dict(self) -> dict:
        return {}
