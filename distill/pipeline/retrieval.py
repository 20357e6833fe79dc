# ruff: noqa: E741  (faiss names: D scores, I ids)
"""Retrieval evaluation on a BEIR-layout task: NDCG@10, recall@100 and MRR@10 per prefix size.

A task folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (a ``query-id corpus-id score`` header line, then one judgement a
line), as BEIR ships its datasets. Documents are embedded as ``title + " " + text``, as BEIR and MTEB
embed them; the search is exact (FAISS ``IndexFlatIP`` through :mod:`distill.index.search`), and a
document with the query's own id is left out of its results, as BEIR leaves it out.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.errors import DistillError
from distill.index.retrieval import retrieval_metrics
from distill.index.search import knn, normalize_prefix
from distill.pipeline.evaluate import json_records
from distill.students.base import input_type_prompt

TOP_K = 100  # ranked per query: recall@100 needs the top 100


@dataclass(frozen=True)
class RetrievalTask:
    name: str  # the folder's name: the key of the task in every result
    doc_ids: list[str]
    documents: list[str]  # title + " " + text, in corpus order
    query_ids: list[str]  # the queries judged in the split, in queries.jsonl order
    queries: list[str]
    qrels: list[dict[int, float]]  # per query, {document row: grade}


def _read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise DistillError(f"retrieval task: {path} does not exist (a BEIR folder holds corpus.jsonl, "
                           "queries.jsonl and qrels/<split>.tsv)")
    try:
        lines = path.read_bytes().decode("utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        raise DistillError(f"{path}: not UTF-8 (byte {e.start}); re-encode the file as UTF-8") from e
    rows = json_records(path, lines, fields)
    if not rows:
        raise DistillError(f"{path} holds no records")
    return rows


def _read_qrels(path: Path) -> list[tuple[str, str, float]]:
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.tsv"))
        raise DistillError(f"retrieval task: {path} does not exist (splits here: {', '.join(found) or 'none'}); "
                           "pass --split one of those")
    try:
        lines = path.read_bytes().decode("utf-8-sig").replace("\r", "").split("\n")
    except UnicodeDecodeError as e:
        raise DistillError(f"{path}: not UTF-8 (byte {e.start}); re-encode the file as UTF-8") from e
    judged = []
    for n, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if not line.strip() or (n == 1 and fields[-1].strip().lower() == "score"):  # BEIR's header line
            continue
        if len(fields) == 4:  # TREC qrels: query-id, iteration, corpus-id, score
            fields = [fields[0], fields[2], fields[3]]
        try:
            judged.append((fields[0].strip(), fields[1].strip(), float(fields[2])))
        except (IndexError, ValueError):
            raise DistillError(f"{path}: line {n} is not `query-id<TAB>corpus-id<TAB>score`") from None
    return judged


def read_task(folder: str | Path, split: str = "test") -> RetrievalTask:
    """Read a BEIR-layout task folder and the judgements of one split.

    :raises DistillError: a missing or malformed file, judgements naming queries or documents that are
        not there (how many of each), or a split with no judged query.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DistillError(f"retrieval task: {folder} is not a folder (pass a BEIR folder: corpus.jsonl, "
                           "queries.jsonl, qrels/<split>.tsv)")
    corpus = _read_jsonl(folder / "corpus.jsonl", ("_id", "text"))
    queries = _read_jsonl(folder / "queries.jsonl", ("_id", "text"))
    judged = _read_qrels(folder / "qrels" / f"{split}.tsv")
    doc_row = {str(d["_id"]): i for i, d in enumerate(corpus)}
    query_text = {str(q["_id"]): str(q["text"]) for q in queries}
    missing_docs = {d for _, d, _ in judged} - doc_row.keys()
    missing_queries = {q for q, _, _ in judged} - query_text.keys()
    if missing_docs or missing_queries:
        raise DistillError(f"{folder / 'qrels' / (split + '.tsv')}: judgements name {len(missing_queries)} query ids "
                           f"absent from queries.jsonl and {len(missing_docs)} document ids absent from corpus.jsonl "
                           f"(e.g. {sorted(missing_queries | missing_docs)[:3]})")
    by_query: dict[str, dict[int, float]] = {}
    for q, d, grade in judged:
        by_query.setdefault(q, {})[doc_row[d]] = grade
    query_ids = [str(q["_id"]) for q in queries if str(q["_id"]) in by_query
                 and any(g >= 1 for g in by_query[str(q["_id"])].values())]
    if not query_ids:
        raise DistillError(f"{folder / 'qrels' / (split + '.tsv')}: no query has a relevant document (score >= 1)")
    documents = [(str(d.get("title") or "") + " " + str(d["text"])).strip() for d in corpus]
    return RetrievalTask(folder.name, list(doc_row), documents, query_ids, [query_text[q] for q in query_ids],
                         [by_query[q] for q in query_ids])


def encode_as(model, texts: list[str], input_type: str, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """``model.encode`` of ``texts`` as queries or documents: a model that records a query or document
    prompt (a student of an E5-style teacher) puts it before each text; others encode the texts as they are."""
    prompts = getattr(model, "prompts", None)
    if isinstance(prompts, dict) and prompts and "prompt" in inspect.signature(model.encode).parameters:
        text = input_type_prompt(prompts, input_type)
        if text is not None:
            return model.encode(texts, batch_size=batch_size, progress=progress, prompt=text)
    return model.encode(texts, batch_size=batch_size, progress=progress)


def search_task(xq: np.ndarray, xb: np.ndarray, task: RetrievalTask, d: int) -> np.ndarray:
    """The top-100 document rows of each query at prefix size ``d`` (exact cosine), the query's own id
    left out: I of shape (nq, <= 100), -1 where there are fewer documents."""
    k = min(TOP_K + 1, len(xb))
    _, I = knn(normalize_prefix(xq, d), normalize_prefix(xb, d), k)
    own = {i: r for r, i in enumerate(task.doc_ids)}
    out = np.full((len(I), TOP_K), -1, dtype=np.int64)
    for q, ranked in enumerate(I):
        ranked = ranked[ranked != own.get(task.query_ids[q], -2)][:TOP_K]
        out[q, :len(ranked)] = ranked
    return out


def _vectors(who, texts: list[str], input_type: str, batch_size: int, progress: bool) -> np.ndarray:
    if isinstance(who, np.ndarray):
        return who
    return encode_as(who, texts, input_type, batch_size, progress)


def retrieval_scores(queries, task: RetrievalTask, dims: list[int], documents=None, batch_size: int = 64,
                     progress: bool = False) -> dict[str, dict]:
    """Per prefix size, ``{"ndcg@10", "recall@100", "mrr@10", "queries"}`` of the task's queries against its
    documents.

    :param queries: the model that embeds the queries, or their vectors already made (nq, >= max(dims)).
    :param documents: who embeds the documents: None (the query model itself), another model in the same
        space (the teacher, for asymmetric search), or their vectors already made, (n_docs, >= max(dims)).
    :raises DistillError: vectors narrower than the prefix sizes, or of another number of rows.
    """
    xq = _vectors(queries, task.queries, "query", batch_size, progress)
    xb = _vectors(queries if documents is None else documents, task.documents, "document", batch_size, progress)
    if xb.shape[0] != len(task.documents) or xq.shape[0] != len(task.queries) or min(
            xb.shape[1], xq.shape[1]) < max(dims):
        raise DistillError(f"document vectors {xb.shape} and query vectors {xq.shape} do not cover "
                           f"{len(task.documents)} documents and {len(task.queries)} queries at {max(dims)} dims")
    return {str(d): retrieval_metrics(search_task(xq, xb, task, d), task.qrels) for d in dims}


def cached_vectors(teacher, texts: list[str], cache: str | Path | None, batch_size: int = 64) -> np.ndarray:
    """The teacher's raw pooled vectors of ``texts`` (N, D_t), kept under ``cache/retrieval/`` by the
    teacher's identity and the texts' content: a task's documents are embedded by the teacher once."""
    import hashlib

    from distill.io import save_npy
    from distill.pipeline.targets import TargetKind, store_key

    if cache is None:
        return teacher.embed_texts(texts, batch_size=batch_size, progress=True)
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
    path = Path(cache) / "retrieval" / f"{store_key(teacher.identity(), TargetKind.TEXT)}-{digest}.npy"
    if path.is_file():
        x = np.load(path)
        if x.shape == (len(texts), teacher.dim):
            return x
    x = teacher.embed_texts(texts, batch_size=batch_size, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(path, x)
    return x


def run_retrieval(task: RetrievalTask, split: str, students: dict, teacher, rotate, dims: list[int],
                  cache: str | Path | None = None, batch_size: int = 64) -> dict:
    """A run's retrieval section: each student symmetric (its own documents) and asymmetric (the teacher's
    rotated documents), the teacher's rotated prefixes, and the teacher at its full width.

    :param students: name -> student (``student``, ``init``); only the first is also scored asymmetric.
    :param rotate: the run's PCA ``transform``: raw teacher vectors -> the student space.
    """
    raw_docs = cached_vectors(teacher, task.documents, cache, batch_size)
    raw_queries = cached_vectors(teacher, task.queries, cache, batch_size)
    width = max(dims)
    docs, queries = rotate(raw_docs)[:, :width], rotate(raw_queries)[:, :width]
    out: dict = {"task": task.name, "split": split, "queries": len(task.queries), "documents": len(task.documents)}
    for i, (name, student) in enumerate(students.items()):
        out[name] = retrieval_scores(student, task, dims, batch_size=batch_size)
        if i == 0:
            out["asymmetric"] = retrieval_scores(student, task, dims, documents=docs, batch_size=batch_size)
    out["teacher_rotated"] = retrieval_scores(queries, task, dims, documents=docs)
    out["teacher"] = retrieval_scores(raw_queries, task, [int(teacher.dim)], documents=raw_docs)
    return out
