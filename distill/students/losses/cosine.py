"""1 - cosine between a student prefix and the same prefix of the rotated target."""

import torch
import torch.nn.functional as F
from torch import nn


class PrefixCosineLoss(nn.Module):
    def forward(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, d) student prefix, (B, >= d) target -> mean of (1 - cos) over the batch."""
        d = student.shape[1]
        return (1 - F.cosine_similarity(student, target[:, :d], dim=1, eps=1e-8)).mean()

    def get_config_dict(self) -> dict:
        return {}
