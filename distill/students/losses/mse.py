"""Mean squared error between a student prefix and the same prefix of the rotated target."""

import torch
from torch import nn


class PrefixMSELoss(nn.Module):
    def forward(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, d) student prefix, (B, >= d) target -> scalar mean over elements of the first d dims."""
        d = student.shape[1]
        return (student - target[:, :d]).pow(2).mean()

    def get_config_dict(self) -> dict:
        return {}
