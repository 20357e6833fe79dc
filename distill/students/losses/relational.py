"""Relational term: the student prefix's in-batch cosine-similarity matrix vs the teacher's full-width one.

Neighbour search depends only on these similarities, so this is the term that keeps the student's
neighbours the teacher's neighbours, even at small prefix sizes.
"""

import torch
import torch.nn.functional as F
from torch import nn


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=1, eps=1e-8)
    return x @ x.T  # (B, B)


class RelationalLoss(nn.Module):
    def forward(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, d) student prefix, (B, D_t) full-width target -> mean squared difference off the diagonal."""
        B = student.shape[0]
        if B < 2:
            return student.sum() * 0.0
        diff = cosine_matrix(student) - cosine_matrix(target).detach()  # (B, B)
        off_diagonal = ~torch.eye(B, dtype=torch.bool, device=student.device)
        return diff[off_diagonal].pow(2).mean()

    def get_config_dict(self) -> dict:
        return {}
