"""The index folder on disk: a manifest, a SQLite docstore, the vectors and one FAISS index per prefix size.

Layout::

    INDEX_DIR/
      manifest.json      model identity and spec, dims, count, index type (written last)
      docs.sqlite        docs(id INTEGER PRIMARY KEY, text TEXT): ids are rows, stable across `add`
      vectors.npy        (count, max(dims)) float32, L2-normalized: re-ranking (funnel) and rebuilds
      index-{d}.faiss    one FAISS index per prefix size d, over the re-normalized d-dim prefixes
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from distill.index.errors import IndexMismatchError, IndexNotFoundError
from distill.index.models import describe_identity

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCS = "docs.sqlite"
VECTORS = "vectors.npy"


def index_file(d: int) -> str:
    return f"index-{d}.faiss"


@dataclass
class Manifest:
    model: dict  # the model's identity(): name, weights fingerprint, ...
    model_spec: str  # how to load the model again (absolute path for folders)
    dims: list[int]  # prefix sizes with an index, ascending
    count: int  # vectors (= texts) in the index; ids are 0..count-1
    index_type: str
    index_params: dict = field(default_factory=dict)
    recall_at_10: dict[str, float] = field(default_factory=dict)  # per dim, approximate types only
    format: int = FORMAT_VERSION

    @property
    def width(self) -> int:
        return max(self.dims)

    def save(self, folder: Path) -> None:
        _atomic_write_text(folder / MANIFEST, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise IndexNotFoundError(f"{folder} is not an index folder (no {MANIFEST}); "
                                     "build one with `distill index build`")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexNotFoundError(f"{path} is not valid JSON ({e}); rebuild the index") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            found = data.get("format") if isinstance(data, dict) else None
            raise IndexNotFoundError(f"{folder}: index format {found} is not supported "
                                     f"(expected {FORMAT_VERSION}); rebuild it")
        return cls(**data)

    def check_model(self, identity: dict) -> None:
        """:raises IndexMismatchError: when ``identity`` is not the model the index was built with."""
        if identity != self.model:
            raise IndexMismatchError(f"this index was built with {describe_identity(self.model)}, not "
                                     f"{describe_identity(identity)}; query it with the same model or rebuild it")

    def check_dim(self, d: int) -> None:
        """:raises IndexMismatchError: when there is no index for prefix size ``d``."""
        if d not in self.dims:
            raise IndexMismatchError(f"this index has prefix sizes {self.dims}, not {d}; pass --dim one of those "
                                     "or rebuild with --dims")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_vectors(folder: Path, xb: np.ndarray) -> None:
    tmp = folder / (VECTORS + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(xb, dtype=np.float32))
    os.replace(tmp, folder / VECTORS)


def save_faiss(folder: Path, d: int, index: faiss.Index) -> None:
    tmp = folder / (index_file(d) + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, folder / index_file(d))


class DocStore:
    """Texts by id in SQLite: ids are assigned in order and never reused."""

    def __init__(self, path: Path):
        self.path = path
        self.conn = sqlite3.connect(str(path))
        self.conn.execute("CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")

    def __len__(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def add(self, first_id: int, texts: list[str]) -> None:
        with self.conn:  # one transaction
            self.conn.executemany("INSERT INTO docs (id, text) VALUES (?, ?)",
                                  ((first_id + i, t) for i, t in enumerate(texts)))

    def get(self, ids) -> dict[int, str]:
        ids = [int(i) for i in np.asarray(ids).ravel() if i >= 0]
        out: dict[int, str] = {}
        for start in range(0, len(ids), 900):  # SQLite limits bound parameters per statement
            chunk = ids[start:start + 900]
            marks = ",".join("?" * len(chunk))
            out.update(self.conn.execute(f"SELECT id, text FROM docs WHERE id IN ({marks})", chunk).fetchall())
        return out

    def close(self) -> None:
        self.conn.close()


class IndexFolder:
    """An index folder opened for reading: manifest, docstore, vectors and FAISS indexes (loaded lazily)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise IndexNotFoundError(f"index folder {self.folder} does not exist; build one with `distill index build`")
        self.manifest = Manifest.load(self.folder)
        for name in [DOCS, VECTORS] + [index_file(d) for d in self.manifest.dims]:
            if not (self.folder / name).is_file():
                raise IndexNotFoundError(f"{self.folder}: {name} is missing; rebuild the index")
        self.docs = DocStore(self.folder / DOCS)
        self._indexes: dict[int, faiss.Index] = {}
        self._xb: np.ndarray | None = None

    @property
    def xb(self) -> np.ndarray:
        """The stored vectors, (count, width) float32, memory-mapped."""
        if self._xb is None:
            xb = np.load(self.folder / VECTORS, mmap_mode="r")
            if xb.shape[0] < self.manifest.count:
                raise IndexNotFoundError(f"{self.folder}: {VECTORS} holds {xb.shape[0]} vectors, the manifest "
                                         f"{self.manifest.count} (interrupted add?); rebuild the index")
            self._xb = xb[: self.manifest.count]
        return self._xb

    def index(self, d: int) -> faiss.Index:
        self.manifest.check_dim(d)
        if d not in self._indexes:
            index = faiss.read_index(str(self.folder / index_file(d)))
            if index.ntotal != self.manifest.count or index.d != d:
                raise IndexNotFoundError(f"{self.folder}: {index_file(d)} holds {index.ntotal} vectors of {index.d} "
                                         f"dims, the manifest {self.manifest.count} of {d}; rebuild the index")
            _set_search_params(index, self.manifest.index_params)
            self._indexes[d] = index
        return self._indexes[d]

    def close(self) -> None:
        self.docs.close()

    def __enter__(self) -> IndexFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _set_search_params(index: faiss.Index, params: dict) -> None:
    """Search-time knobs are not all saved inside FAISS files (efSearch is), so set them from the manifest."""
    if "nprobe" in params and hasattr(index, "nprobe"):
        index.nprobe = int(params["nprobe"])
    if "ef_search" in params and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(params["ef_search"])
