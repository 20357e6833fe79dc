"""The nested (Matryoshka) loss: one weighted sum of terms per prefix size.

For each ``d`` in ``dims``: ``weight_d * (a * MSE(s[:, :d], y[:, :d]) + b * (1 - cos(s[:, :d], y[:, :d]))
+ c * relational(s[:, :d], y))``, where ``y`` is the PCA-rotated teacher target, so the student's
first ``d`` dims are asked to hold the teacher's top-``d`` components. Extra terms (the hierarchy term
of imposed or emergent token groups) plug in through ``extra_terms``: modules called as
``term(student_prefix, d, **batch)`` that return a scalar or None when they do not apply at ``d``;
the trainer puts ``model=`` (the unwrapped student) in ``batch``, for terms on the token table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distill.students.losses.cosine import PrefixCosineLoss
from distill.students.losses.mse import PrefixMSELoss
from distill.students.losses.relational import RelationalLoss


class NestedLoss(nn.Module):
    def __init__(self, dims: Sequence[int], dim_weights: Sequence[float] | None = None, mse: float = 1.0,
                 cosine: float = 1.0, relational: float = 1.0, extra_terms: dict[str, nn.Module] | None = None):
        super().__init__()
        self.dims = list(dims)
        self.dim_weights = list(dim_weights) if dim_weights is not None else [1.0] * len(self.dims)
        if len(self.dim_weights) != len(self.dims):
            raise ValueError(f"{len(self.dim_weights)} dim weights for {len(self.dims)} dims")
        self.term_weights = {"mse": mse, "cos": cosine, "rel": relational}
        self.terms = nn.ModuleDict({"mse": PrefixMSELoss(), "cos": PrefixCosineLoss(), "rel": RelationalLoss()})
        self.extra_terms = nn.ModuleDict(extra_terms or {})

    def forward(self, student: torch.Tensor, target: torch.Tensor, **batch
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, D_s) student, (B, D_t) rotated target -> (total loss, {"<term>@<d>": detached value} for logging).

        The logged values stay tensors on the device: reading them is the caller's (one) sync.
        """
        total = student.new_zeros(())
        logs: dict[str, torch.Tensor] = {}
        for d, w_d in zip(self.dims, self.dim_weights):
            prefix = student[:, :d]  # (B, d)
            for name, term in self.terms.items():
                weight = self.term_weights[name]
                if weight == 0:
                    continue
                value = term(prefix, target)
                total = total + w_d * weight * value
                logs[f"{name}@{d}"] = value.detach()
            for name, term in self.extra_terms.items():
                value = term(prefix, d, **batch)
                if value is not None:
                    total = total + w_d * value
                    logs[f"{name}@{d}"] = value.detach()
        return total, logs

    def get_config_dict(self) -> dict:
        return {"dims": self.dims, "dim_weights": self.dim_weights, **self.term_weights}
