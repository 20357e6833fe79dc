# ruff: noqa: E741  (faiss names: D scores, I ids)
"""Retrieval metrics of ranked ids against graded relevance judgements, as BEIR and MTEB compute them.

``I`` is (nq, k) database row ids ranked best first (-1: no result); ``qrels`` gives, per query, a
``{row: grade}`` dict of its judged documents. The definitions follow ``pytrec_eval`` (what BEIR and
MTEB call): NDCG with linear gain (``grade / log2(rank + 1)``) normalized by the ideal ranking of every
judged document with a positive grade; recall@k and MRR@k count a document relevant when its grade
is at least 1. Queries without a relevant document are left out of the means, as BEIR leaves them out.
"""

from __future__ import annotations

import numpy as np


def query_metrics(ranked: np.ndarray, grades: dict[int, float], k_ndcg: int = 10, k_recall: int = 100,
                  k_mrr: int = 10) -> dict[str, float] | None:
    """NDCG@k, recall@k and MRR@k of one query's ranked ids; None when it has no relevant document."""
    relevant = {i for i, g in grades.items() if g >= 1}
    if not relevant:
        return None
    ranked = [int(i) for i in ranked if i >= 0]
    gains = np.array([float(grades.get(i, 0.0)) for i in ranked[:k_ndcg]])
    discounts = 1.0 / np.log2(np.arange(2, k_ndcg + 2))
    ideal = np.sort(np.array([g for g in grades.values() if g > 0], dtype=np.float64))[::-1][:k_ndcg]
    ndcg = float(gains @ discounts[:len(gains)] / (ideal @ discounts[:len(ideal)]))
    recall = len(relevant.intersection(ranked[:k_recall])) / len(relevant)
    first = next((r for r, i in enumerate(ranked[:k_mrr]) if i in relevant), None)
    return {f"ndcg@{k_ndcg}": ndcg, f"recall@{k_recall}": recall,
            f"mrr@{k_mrr}": 0.0 if first is None else 1.0 / (first + 1)}


def retrieval_metrics(I: np.ndarray, qrels: list[dict[int, float]]) -> dict[str, float]:
    """Mean NDCG@10, recall@100 and MRR@10 over the queries of ``I`` (nq, >= 100) that have a relevant
    document, plus ``queries``: how many counted.

    :param qrels: one ``{row: grade}`` dict per row of ``I``.
    """
    if len(I) != len(qrels):
        raise ValueError(f"{len(I)} rankings for {len(qrels)} queries")
    rows = [m for m in (query_metrics(ranked, grades) for ranked, grades in zip(I, qrels)) if m is not None]
    if not rows:
        return {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0, "queries": 0}
    return {**{key: float(np.mean([m[key] for m in rows])) for key in rows[0]}, "queries": len(rows)}
