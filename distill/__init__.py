"""distill: small, fast, hierarchical students distilled from big embedding models."""

__version__ = "0.1.0"


def load(path, device=None):
    """Load a student (a student or run folder); returns a model with ``encode(texts, dim=...)``.

    :param device: where a contextual student runs (default: the CPU); static students always use the CPU.
    """
    from distill.students import load_student

    return load_student(path, device=device)


__all__ = ["__version__", "load"]
