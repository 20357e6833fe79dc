"""Teachers: pretrained models whose vectors the students learn to reproduce."""

from distill.teachers.pooling import Pooling
from distill.teachers.registry import DEFAULT_TEACHER, TEACHER_ALIASES, list_teachers, resolve_teacher
from distill.teachers.teacher import Teacher, TeacherKind, load_teacher

__all__ = ["DEFAULT_TEACHER", "TEACHER_ALIASES", "Pooling", "Teacher", "TeacherKind", "list_teachers",
           "load_teacher", "resolve_teacher"]
