"""FAISS indexes of model vectors, one per prefix size: build, add, query, funnel search, compare spaces."""

from distill.index.add import add_to_index
from distill.index.build import IndexParams, IndexType, build_index, make_index
from distill.index.compare import (
    compare_models,
    compare_precisions,
    compare_spaces,
    linear_cka,
    mutual_knn,
    neighbour_overlap,
)
from distill.index.errors import IndexMismatchError, IndexNotFoundError
from distill.index.precision import Metric, Precision, binary_codes, bytes_per_vector, index_search
from distill.index.query import Funnel, query_index, search_index
from distill.index.search import funnel_search, knn, normalize_prefix, recall_at_k
from distill.index.store import ChunkedVectors, IndexFolder, Manifest

__all__ = ["ChunkedVectors", "Funnel", "IndexFolder", "IndexMismatchError", "IndexNotFoundError", "IndexParams",
           "IndexType", "Manifest", "Metric", "Precision", "add_to_index", "binary_codes", "build_index",
           "bytes_per_vector", "compare_models", "compare_precisions", "compare_spaces", "funnel_search",
           "index_search", "knn", "linear_cka", "make_index", "mutual_knn", "neighbour_overlap", "normalize_prefix",
           "query_index", "recall_at_k", "search_index"]
