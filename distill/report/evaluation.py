"""`distill eval`: every requested quality check of one model, with a teacher as baseline when given."""

from __future__ import annotations

from pathlib import Path

from distill.errors import DistillError


def _model_dims(model, dims: list[int] | None) -> list[int]:
    from distill.index.models import model_dims

    width = int(model.dim)
    if not dims:
        return model_dims(model)
    bad = [d for d in dims if not 0 < d <= width]
    if bad:
        raise DistillError(f"--dims {bad} are outside 1..{width}, the model's width")
    return sorted(set(dims))


def evaluate_model(model, dims: list[int] | None = None, sts: str | Path | None = None,
                   word_pairs: str | Path | None = None, analogies: str | Path | None = None,
                   teacher=None, retrieval: str | Path | None = None, split: str = "test",
                   documents_by=None) -> dict:
    """Scores of ``model`` (and of ``teacher`` cut to the same prefix sizes, where it is as wide) per check.

    Returns ``{"dims": [...], "sts": {"student": {dim: {...}}, "teacher": ...}, "word_pairs": ..., "analogies": ...,
    "retrieval": {TASK: {dim: {"ndcg@10", "recall@100", "mrr@10", "queries"}}}, "retrieval_teacher": ...}`` with
    only the checks asked for.
    :param retrieval: a BEIR-layout task folder, scored on ``split``.
    :param documents_by: a model in ``model``'s space that embeds the task's documents (asymmetric search);
        default: ``model`` itself.
    :raises DistillError: when no check is asked for, or a file is missing or malformed.
    """
    from distill.pipeline.evaluate import read_pairs, sts_scores
    from distill.pipeline.wordsim import analogy_accuracy, read_analogies, read_word_pairs, token_space, word_similarity

    if not (sts or word_pairs or analogies or retrieval):
        raise DistillError("nothing to evaluate: pass --sts, --word-pairs, --analogies and/or --retrieval")
    dims = _model_dims(model, dims)
    models = {"student": (model, dims)}
    if teacher is not None:
        models["teacher"] = (teacher, [d for d in dims if d <= int(teacher.dim)] or [int(teacher.dim)])
    out: dict = {"dims": dims}
    if retrieval:
        out.update(_retrieval(models, retrieval, split, documents_by))
    if sts:
        pairs = read_pairs(sts)
        out["sts"] = {name: sts_scores(m, pairs, d) for name, (m, d) in models.items()}
    if word_pairs or analogies:
        words = read_word_pairs(word_pairs) if word_pairs else None
        questions = read_analogies(analogies) if analogies else None
        for name, (m, d) in models.items():
            space = token_space(m)
            if words is not None:
                out.setdefault("word_pairs", {})[name] = word_similarity(space, words, d)
            if questions is not None:
                out.setdefault("analogies", {})[name] = analogy_accuracy(space, questions, d)
    return out


def _retrieval(models: dict, folder: str | Path, split: str, documents_by) -> dict:
    """Each model's queries against the task's documents, embedded by ``documents_by`` (when given: once, for
    every model of its space) or by the model itself."""
    from distill.pipeline.retrieval import encode_as, read_task, retrieval_scores

    task = read_task(folder, split)
    docs = encode_as(documents_by, task.documents, "document", progress=True) if documents_by is not None else None
    out: dict = {"split": split}
    if documents_by is not None:
        out["documents_by"] = documents_by.identity().get("name")
    for name, (m, dims) in models.items():
        key = "retrieval" if name == "student" else f"retrieval_{name}"
        out[key] = {task.name: retrieval_scores(m, task, dims, documents=docs, progress=True)}
    return out
