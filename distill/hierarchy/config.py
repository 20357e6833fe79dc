"""Options of the token hierarchy, one frozen object saved inside the run's config.json."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum

from distill.errors import DistillError


class TokenizerMode(str, Enum):
    TEACHER = "teacher"  # the teacher's own tokenizer (word pieces)
    CHAR = "char"  # single characters of the corpus, for small demonstrations


@dataclass(frozen=True)
class HierarchyConfig:
    groups: str | None = None  # a YAML file of imposed groups
    emergent: bool = False  # cluster the teacher's token targets into a coarse-to-fine tree
    weight: float = 1.0  # weight of the hierarchy term (per prefix size it applies to)
    temperature: float = 0.1  # of the token-to-centroid softmax
    branching: tuple[int, ...] = (4, 4)  # emergent: children per group, one entry per level
    min_size: int = 3  # emergent: smallest group kept (smaller ones merge into their nearest sibling)
    threshold: float | None = None  # emergent: a group whose mean cosine to its centroid reaches this is not split
    max_tokens: int = 5000  # emergent: cluster at most this many tokens (the most frequent in the corpus)
    refresh_every: int = 0  # emergent: re-cluster the student's own rows every N optimizer steps (0: never)
    sample: int = 4096  # tokens per level used by one evaluation of the term

    def __post_init__(self) -> None:
        object.__setattr__(self, "branching", tuple(int(b) for b in self.branching))
        if self.groups and self.emergent:
            raise DistillError("--groups and --emergent exclude each other: impose groups or let them emerge")
        if not self.branching or min(self.branching) < 2:
            raise DistillError(f"--branching needs sizes of at least 2, got {list(self.branching)}")
        if self.min_size < 2:
            raise DistillError(f"the minimum group size must be at least 2, got {self.min_size}")
        if self.temperature <= 0:
            raise DistillError(f"the hierarchy temperature must be positive, got {self.temperature}")

    @property
    def enabled(self) -> bool:
        return bool(self.groups) or self.emergent

    @classmethod
    def from_dict(cls, data: dict | None) -> HierarchyConfig:
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise DistillError(f"unknown hierarchy options: {', '.join(sorted(unknown))}")
        return cls(**data)
