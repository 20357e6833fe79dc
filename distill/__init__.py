"""distill: small, fast, hierarchical students distilled from big embedding models."""

__version__ = "0.1.0"


def load(path):
    """Load a student saved with ``student.save(folder)``; returns a model with ``encode(texts, dim=...)``."""
    from distill.students import load_student

    return load_student(path)


__all__ = ["__version__", "load"]
