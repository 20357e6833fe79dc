"""Students: small models that reproduce a teacher's vectors, every prefix usable on its own."""

from __future__ import annotations

from pathlib import Path

from distill.errors import DistillError
from distill.students.base import CONFIG_NAME, Student, StudentConfig, load_tokenizer, load_weights, read_config
from distill.students.conv import ConvStudent
from distill.students.layers import LayersStudent
from distill.students.static import StaticStudent
from distill.students.transformer import TransformerStudent

STUDENTS: dict[str, type[Student]] = {"static": StaticStudent, "transformer": TransformerStudent,
                                      "layers": LayersStudent, "conv": ConvStudent}


def build_student(config: StudentConfig, tokenizer) -> Student:
    if config.kind not in STUDENTS:
        raise DistillError(f"unknown student kind {config.kind!r} (choose from {', '.join(STUDENTS)})")
    return STUDENTS[config.kind](config, tokenizer)


def load_student(folder: str | Path, device=None) -> Student:
    """Load a student folder (``distill_student.json`` + ``model.safetensors`` + ``tokenizer.json``).

    A run folder is accepted too: its ``student/`` subfolder is loaded.

    :param device: where a contextual student runs (``"cuda"``, ``"cpu"``, a ``torch.device``; default
        CPU). A static student always runs on the CPU: its inference is a table lookup in numpy,
        faster there than a round trip to a GPU.
    """
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() and (folder / "student" / CONFIG_NAME).is_file():
        folder = folder / "student"
    student = build_student(read_config(folder), load_tokenizer(folder))
    student.load_state_dict(load_weights(folder))
    if device is not None and not isinstance(student, StaticStudent):
        student = student.to(device)
    return student.eval()


__all__ = ["STUDENTS", "Student", "StudentConfig", "StaticStudent", "TransformerStudent", "LayersStudent",
           "ConvStudent",
           "build_student",
           "load_student"]
