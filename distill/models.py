"""Resolving a model spec: a run folder, a student folder or a teacher (alias, Hugging Face id, model folder).

Above the index, report and service packages, which take the model this returns. Every command that
takes a model resolves it here, so a run folder (what README's example session hands around) works
wherever a student folder does.
"""

from __future__ import annotations

from pathlib import Path

from distill.errors import DistillError
from distill.index.models import EmbeddingModel

STUDENT_MARKER = "distill_student.json"


def is_student_folder(spec: str | Path) -> bool:
    return Path(spec).is_dir() and (Path(spec) / STUDENT_MARKER).is_file()


def student_folder(spec: str | Path) -> Path | None:
    """The student folder ``spec`` names: itself, or a run folder's ``student/``; None for anything else."""
    if is_student_folder(spec):
        return Path(spec)
    if Path(spec).is_dir() and is_student_folder(Path(spec) / "student"):
        return Path(spec) / "student"
    return None


def run_folder_of(spec: str | Path) -> Path | None:
    """The run folder a model spec belongs to (a run folder, or the ``student/`` or ``student-init/`` inside
    one): where its space is defined. None for a bare student folder or a teacher."""
    from distill.pipeline.folder import RunFolder

    for path in (Path(spec), Path(spec).parent if is_student_folder(spec) else None):
        if path is not None and RunFolder(path).pca.is_file() and RunFolder(path).is_run():
            return path
    return None


def load_model(spec: str | Path, space: str | Path | None = None, device=None) -> EmbeddingModel:
    """A run folder (its ``student/``), a student folder (it holds ``distill_student.json``) or a teacher
    spec (alias, HF id, folder).

    :param space: a run folder: a teacher is loaded as that run labeled its targets and placed in the run's
        student space (rotated, scaled and cut as the student's vectors); a student must already be in it.
    :raises TeacherNotFoundError: a teacher spec that can be had neither locally nor from the hub.
    :raises DistillError: a run folder with no trained student yet; a model outside ``space``.
    """
    from distill.pipeline.folder import RunFolder

    folder = student_folder(spec)
    if folder is None and RunFolder(spec).is_run() and RunFolder(spec).data.is_dir():
        raise DistillError(f"{spec} is a run folder with no trained student yet (no student/{STUDENT_MARKER}); "
                           f"finish it with `distill run --out {spec}` or `distill train {spec}`")
    if folder is not None:
        import distill

        student = distill.load(folder, device=device)
        if space is not None:
            from distill.pipeline.space import load_space

            wanted = load_space(space).name
            if student.config.space != wanted:
                raise DistillError(f"{spec} is in space {student.config.space or 'unrecorded'}, not in {space}'s "
                                   f"space {wanted}; --space places a teacher in a run's space, pass the teacher "
                                   "as --model")
        return student
    if space is not None:
        from distill.pipeline.space import load_space, space_teacher

        return space_teacher(spec, load_space(space), device=device)
    from distill.teachers import load_teacher

    return load_teacher(spec, device=device)
