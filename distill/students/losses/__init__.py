"""Losses, one per file; :class:`NestedLoss` sums them over the nested prefix sizes."""

from distill.students.losses.cosine import PrefixCosineLoss
from distill.students.losses.hierarchy import HierarchyLoss
from distill.students.losses.mse import PrefixMSELoss
from distill.students.losses.nested import NestedLoss
from distill.students.losses.relational import RelationalLoss, cosine_matrix
from distill.students.losses.token import TokenCosineLoss

__all__ = ["HierarchyLoss", "NestedLoss", "PrefixCosineLoss", "PrefixMSELoss", "RelationalLoss", "TokenCosineLoss",
           "cosine_matrix"]
