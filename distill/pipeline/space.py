"""A run's student space, and the teacher placed in it: documents by the teacher, queries by the student.

A student is trained to reproduce the teacher's vectors after the run's PCA rotation (and its scale,
centering or whitening), so the teacher's own vectors, rotated and cut the same way, live in the space
the student's do. A space is named by a fingerprint of that rotation (``pca-<hash>``): every student of
the run records it (``StudentConfig.space``), an index built from either records it in its manifest,
and a query model of another space is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.index.search import normalize_prefix
from distill.pipeline.folder import RunFolder
from distill.pipeline.pca import PCARotation


@dataclass(frozen=True)
class Space:
    folder: Path  # the run folder
    pca: PCARotation
    name: str  # pca-<hash>: what students and manifests record
    dims: list[int]  # the run's prefix sizes
    teacher: dict  # the identity of the teacher the rotation was fitted to
    config: dict  # the run's config.json: how the teacher was loaded for its targets


def _student_config(folder: RunFolder) -> dict | None:
    from distill.students.base import CONFIG_NAME

    for path in (folder.student / CONFIG_NAME, folder.student_config):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def load_space(run: str | Path) -> Space:
    """The space of a run folder (it holds ``pca.npz``, ``config.json`` and the student's config).

    :raises DistillError: a folder that is not a prepared run.
    """
    folder = RunFolder(run)
    student = _student_config(folder)
    if not folder.pca.is_file() or not folder.is_run() or student is None:
        raise DistillError(f"--space {run}: not a prepared run folder (it needs {folder.pca.name}, "
                           f"{folder.config.name} and a student's config, as `distill run` writes them)")
    pca = PCARotation.load(folder.pca)
    return Space(folder.root, pca, pca.fingerprint(), sorted(int(d) for d in student["dims"]),
                 student.get("teacher", {}), folder.read_config())


class TeacherInSpace:
    """A teacher whose vectors are rotated, scaled and cut as the space's students' are.

    Follows the model contract of :mod:`distill.index.models`: ``encode`` gives L2-normalized prefixes
    (a prefix re-normalized, as a student's), ``embed_texts`` the raw rotated vectors (for ``--metric
    dot``), ``identity`` the teacher's with the space.
    """

    def __init__(self, teacher, space: Space):
        if teacher.fingerprint != space.teacher.get("weights"):
            raise DistillError(f"the space of {space.folder} is the rotation of {space.teacher.get('name')} (weights "
                               f"{space.teacher.get('weights')}), not of {teacher.source.name} (weights "
                               f"{teacher.fingerprint}); pass that run's teacher as --model")
        self.teacher, self.space = teacher, space
        self.dims = list(space.dims)
        self.dim = self.dims[-1]
        self.prompts: dict[str, str] = {}  # the teacher's prompt (if any) is the one its targets were labeled with

    def identity(self) -> dict:
        return {**self.teacher.identity(), "dim": self.dim, "space": self.space.name}

    def embed_texts(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Raw vectors in the space: (N, dim) float32, the rotated teacher vectors cut to the student's width."""
        raw = self.teacher.embed_texts(list(texts), batch_size=batch_size, progress=progress)
        return np.ascontiguousarray(self.space.pca.transform(raw)[:, :self.dim])

    def check_dim(self, dim: int | None) -> int:
        """``dim`` (default: the full width), as a student's ``check_dim``. :raises DistillError: outside 1..width."""
        if dim is None:
            return self.dim
        if not 0 < dim <= self.dim:
            raise DistillError(f"dim must be in 1..{self.dim} in the space of {self.space.folder}, got {dim}")
        return int(dim)

    def encode(self, texts: list[str], dim: int | None = None, batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        return normalize_prefix(self.embed_texts(texts, batch_size, progress), self.check_dim(dim))


def space_teacher(spec: str | Path, space: Space, device=None) -> TeacherInSpace:
    """Load ``spec`` as the space's teacher, with the options its run labeled targets with (pooling, layer,
    max length, prompt), and place it in the space.

    :raises DistillError: a teacher other than the one the space was fitted to.
    """
    from distill.teachers import load_teacher

    cfg = space.config
    teacher = load_teacher(spec, device=device, dtype=cfg.get("teacher_dtype"), pooling=cfg.get("pooling"),
                           layer=cfg.get("layer", -1), max_length=cfg.get("max_length"), prompt=cfg.get("prompt"))
    return TeacherInSpace(teacher, space)
