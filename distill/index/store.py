"""The index folder on disk: immutable generations named by one pointer file, and a SQLite docstore.

Layout::

    INDEX_DIR/
      CURRENT                the live generation's folder name, e.g. ``gen-000002`` (replaced atomically)
      docs.sqlite            docs(id INTEGER PRIMARY KEY, text TEXT): ids are rows, stable across `add`
      gen-000002/            written once, never changed; a later `add` writes gen-000003
        manifest.json        model identity and spec, dims, count, metric, precision, vector chunks
        vectors-000000.npy   (rows, max(dims)) float32 chunks, in id order: re-ranking (funnel), rebuilds
        vectors-000001.npy   (cos: L2-normalized at full width; dot: as the model gave them)
        index-{d}.faiss      one FAISS index per prefix size d (binary indexes: the FAISS binary format)

A Qdrant index (``backend: qdrant``, distill/index/qdrant.py) has ``CURRENT`` and generations too, each holding
only its manifest: the vectors and texts are in a Qdrant collection.

An `add` builds the next generation beside the live one (earlier chunks hard-linked, one new chunk,
each FAISS index read, extended and written anew), then replaces ``CURRENT``, then removes the old
generation: a crash at any point leaves the old index or the new one, and a rerun removes what a
crashed add left. The docstore is shared by all generations: an add replaces the rows from the live
count on in one transaction before the switch, and readers ignore ids at or past their manifest's
count, so rows of an add that did not finish are never seen.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import faiss
import numpy as np

from distill.errors import DistillError
from distill.index.chunks import ChunkedVectors, RowFile
from distill.index.errors import IndexMismatchError, IndexNotFoundError
from distill.index.ivf import holds
from distill.index.models import describe_identity
from distill.index.precision import Metric, Precision
from distill.io import atomic_path, fsync_dir, remove_stale_tmp, save_json, save_text

FORMAT_VERSION = 2  # 1: one flat folder (manifest.json, vectors.npy, index-*.faiss) without generations
CURRENT = "CURRENT"
MANIFEST = "manifest.json"
DOCS = "docs.sqlite"
LOCK = ".lock"
GEN_PREFIX = "gen-"


def gen_name(n: int) -> str:
    return f"{GEN_PREFIX}{n:06d}"


def chunk_file(i: int) -> str:
    return f"vectors-{i:06d}.npy"


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
    recall_at_10: dict[str, float] = field(default_factory=dict)  # per dim, at build, where search is not exact
    metric: str = Metric.COS.value
    precision: str = Precision.FLOAT32.value
    chunks: list[int] = field(default_factory=list)  # rows of each vectors chunk, in id order
    generation: int = 1
    last_add: dict | None = None  # {"first", "count", "sha256"} of the last add: its retry changes nothing
    format: int = FORMAT_VERSION
    # the space the vectors live in (``pca-<hash>``, a run's rotation of its teacher): any model of that space
    # may query the index (documents by the teacher, queries by its student); None: the model's own space
    space: str | None = None
    space_spec: str | None = None  # the run folder that defines it, to load the documents' model again for adds
    backend: str = "faiss"  # or "qdrant": the vectors in a Qdrant collection (distill/index/qdrant.py), no files here
    location: str | None = None  # qdrant: the server's URL; None: local mode inside the folder
    collection: str | None = None  # qdrant: the collection's name

    @property
    def width(self) -> int:
        return max(self.dims)

    def save(self, gen: Path) -> None:
        save_json(gen / MANIFEST, asdict(self))

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """The live manifest of the index folder ``folder``. :raises IndexNotFoundError: not a usable index."""
        return cls.read(live_generation(Path(folder)))

    @classmethod
    def read(cls, gen: Path) -> Manifest:
        path = gen / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise IndexNotFoundError(f"{gen}: {MANIFEST} is missing; rebuild the index") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IndexNotFoundError(f"{path} is not valid JSON ({e}); rebuild the index") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            found = data.get("format") if isinstance(data, dict) else None
            raise IndexNotFoundError(f"{gen.parent}: index format {found} is not supported (expected "
                                     f"{FORMAT_VERSION}); rebuild it with `distill index build --overwrite`")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def check_model(self, identity: dict, queries: bool = False) -> None:
        """:param queries: the model is to encode queries: in an index with a space, any model of that space will do.
        :raises IndexMismatchError: when ``identity`` is not the model the index was built with (or, for
            queries, not a model of its space).
        """
        if queries and self.space is not None:
            if identity.get("space") != self.space:
                raise IndexMismatchError(
                    f"this index holds vectors in space {self.space} (documents by {describe_identity(self.model)}), "
                    f"but the query model {describe_identity(identity)} is in space "
                    f"{identity.get('space') or 'none (it records none)'}; query it with a student of the run "
                    f"{self.space_spec or 'that made the space'}, or rebuild the index")
            return
        if identity != self.model:
            raise IndexMismatchError(f"this index was built with {describe_identity(self.model)}, not "
                                     f"{describe_identity(identity)}; query it with the same model or rebuild it")

    def check_dim(self, d: int) -> None:
        """:raises IndexMismatchError: when there is no index for prefix size ``d``."""
        if d not in self.dims:
            raise IndexMismatchError(f"this index has prefix sizes {self.dims}, not {d}; pass --dim one of those "
                                     "or rebuild with --dims")


# ---- generations ------------------------------------------------------------------------------------
def is_index_folder(folder: Path) -> bool:
    """Whether ``folder`` holds an index, of any format, or what an interrupted build left."""
    return (folder / CURRENT).is_file() or (folder / MANIFEST).is_file() or any(generations(folder))


def unfinished_build(folder: Path) -> bool:
    """Whether ``folder`` holds only what a FAISS build killed before its switch leaves: no ``CURRENT`` (so no
    index anyone reads), nothing but the lock, the document store, generation folders and a temporary
    ``CURRENT`` that was never renamed."""
    names = [p.name for p in folder.iterdir()]
    return (bool(names) and not (folder / CURRENT).exists() and not (folder / MANIFEST).exists()
            and all(n == LOCK or n.startswith((GEN_PREFIX, DOCS, f".{CURRENT}.")) for n in names))


def clear_unfinished(folder: Path) -> None:
    """Empty an unfinished build's folder (but for its lock), holding the lock: a build still running there is
    refused, not cleared.

    :raises DistillError: another `distill index` command is writing the folder.
    """
    with writer_lock(folder):
        for p in folder.iterdir():
            if p.name != LOCK:
                shutil.rmtree(p) if p.is_dir() else p.unlink()


def generations(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"{GEN_PREFIX}*") if p.is_dir())


def live_generation(folder: Path) -> Path:
    """The generation folder ``CURRENT`` names. :raises IndexNotFoundError: none, with what to do."""
    if not folder.is_dir():
        raise IndexNotFoundError(f"index folder {folder} does not exist; build one with `distill index build`")
    try:
        name = (folder / CURRENT).read_text().strip()
    except FileNotFoundError:
        if (folder / MANIFEST).is_file():
            raise IndexNotFoundError(f"{folder} is an index of format 1, which is not supported (expected "
                                     f"{FORMAT_VERSION}); rebuild it with `distill index build --overwrite`") from None
        if generations(folder):
            raise IndexNotFoundError(f"{folder} holds an interrupted build (no {CURRENT}); run its "
                                     "`distill index build` again") from None
        raise IndexNotFoundError(f"{folder} is not an index folder (no {CURRENT}); "
                                 "build one with `distill index build`") from None
    gen = folder / name
    if not name.startswith(GEN_PREFIX) or "/" in name or not gen.is_dir():
        raise IndexNotFoundError(f"{folder}: {CURRENT} names {name!r}, which is not a generation folder here; "
                                 "rebuild the index")
    return gen


def switch_generation(folder: Path, gen: Path) -> None:
    """Make ``gen`` the live generation: one atomic rename of ``CURRENT`` (after fsyncing ``gen``)."""
    fsync_dir(gen)
    save_text(folder / CURRENT, gen.name + "\n")


def remove_stale(folder: Path, live: Path) -> list[str]:
    """Remove every generation but ``live``, and the temporary files of killed writers; returns the generations."""
    stale = [p for p in generations(folder) if p != live]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    if remove_stale_tmp(folder) or stale:
        fsync_dir(folder)
    return [p.name for p in stale]


def link_or_copy(src: Path, dst: Path) -> None:
    """A chunk of the previous generation into the next: a hard link (no bytes copied), or a copy where
    the filesystem has no hard links."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)


@contextmanager
def writer_lock(folder: Path):
    """One writer at a time per index folder (an OS lock: a killed writer releases it).

    :raises DistillError: another process is writing this index now.
    """
    import fcntl

    with open(folder / LOCK, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DistillError(f"{folder} is being written by another `distill index` command; wait for it "
                               "to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def save_faiss(path: Path, index: faiss.Index | faiss.IndexBinary) -> None:
    with atomic_path(path) as tmp:
        if isinstance(index, faiss.IndexBinary):
            faiss.write_index_binary(index, str(tmp))
        else:
            faiss.write_index(index, str(tmp))


def read_faiss(f, precision: Precision | str) -> faiss.Index | faiss.IndexBinary:
    """A FAISS index from an open binary file (or a path), binary or not as ``precision`` says."""
    if isinstance(f, (str, Path)):
        with open(f, "rb") as opened:
            return read_faiss(opened, precision)
    reader = faiss.PyCallbackIOReader(f.read)
    return faiss.read_index_binary(reader) if Precision(precision) is Precision.BINARY else faiss.read_index(reader)


# ---- docstore ---------------------------------------------------------------------------------------
class DocStore:
    """Texts by id in SQLite: ids are assigned in order and never reused.

    :param limit: ids at or past it are not seen (the rows of an add that has not switched yet).
    """

    def __init__(self, path: Path, limit: int | None = None):
        self.path, self.limit = path, limit
        self.conn = sqlite3.connect(str(path))
        self.conn.execute("CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")

    def __len__(self) -> int:
        if self.limit is None:
            return self.conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM docs WHERE id < ?", (self.limit,)).fetchone()[0]

    def put(self, first_id: int, texts: list[str]) -> None:
        """Make ``texts`` the rows from ``first_id`` on, in one transaction: rows at or past ``first_id``
        (those of an add that crashed before its switch) are replaced, so a rerun cannot collide."""
        with self.conn:
            self.conn.execute("DELETE FROM docs WHERE id >= ?", (first_id,))
            self.conn.executemany("INSERT INTO docs (id, text) VALUES (?, ?)",
                                  ((first_id + i, t) for i, t in enumerate(texts)))

    def get(self, ids) -> dict[int, str]:
        ids = [int(i) for i in np.asarray(ids).ravel() if i >= 0 and (self.limit is None or i < self.limit)]
        out: dict[int, str] = {}
        for start in range(0, len(ids), 900):  # SQLite limits bound parameters per statement
            chunk = ids[start:start + 900]
            marks = ",".join("?" * len(chunk))
            out.update(self.conn.execute(f"SELECT id, text FROM docs WHERE id IN ({marks})", chunk).fetchall())
        return out

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> DocStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- reading ----------------------------------------------------------------------------------------
class IndexFolder:
    """An index folder opened for reading: manifest, docstore, vectors and FAISS indexes.

    Opening pins the live generation: its files are opened (vectors memory-mapped, FAISS files held
    open and read when first searched), so an `add` that switches to a new generation and removes
    this one does not disturb a reader that has it open; it goes on seeing the index as it was.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        for attempt in range(3):  # an add may remove the generation between reading CURRENT and opening it
            gen = live_generation(self.folder)
            try:
                self._open(gen)
                break
            except FileNotFoundError as e:
                if attempt == 2 or live_generation(self.folder) == gen:
                    raise IndexNotFoundError(f"{gen}: {Path(e.filename or '?').name} is missing; "
                                             "rebuild the index") from None
        self.docs = DocStore(self.folder / DOCS, limit=self.manifest.count)
        self._indexes: dict[int, faiss.Index | faiss.IndexBinary] = {}

    def _open(self, gen: Path) -> None:
        m = Manifest.read(gen)
        if m.backend != "faiss":
            raise IndexNotFoundError(f"{self.folder} is a {m.backend} index; open it with "
                                     "distill.index.query.open_index")
        if not (self.folder / DOCS).is_file():
            raise IndexNotFoundError(f"{self.folder}: {DOCS} is missing; rebuild the index")
        chunks = [RowFile(gen / chunk_file(i)) for i in range(len(m.chunks))]
        if (sum(m.chunks) != m.count or not chunks
                or any(c.shape != (rows, m.width) for c, rows in zip(chunks, m.chunks))):
            raise IndexNotFoundError(f"{gen}: the vector chunks hold {[c.shape for c in chunks]}, the manifest "
                                     f"{m.count} vectors of {m.width} dims; rebuild the index")
        files = {}
        try:
            for d in m.dims:
                files[d] = open(gen / index_file(d), "rb")
        except FileNotFoundError:
            for f in files.values():
                f.close()
            raise
        self._files = files
        self.generation, self.manifest, self._xb = gen, m, ChunkedVectors(chunks)

    @property
    def xb(self) -> ChunkedVectors:
        """The stored vectors, (count, width) float32, read by rows from their chunks."""
        return self._xb

    def index(self, d: int) -> faiss.Index | faiss.IndexBinary:
        self.manifest.check_dim(d)
        if d not in self._indexes:
            f = self._files.pop(d)
            with f:
                index = read_faiss(f, self.manifest.precision)
            bits = -(-d // 8) * 8 if self.manifest.precision == Precision.BINARY else d
            if not holds(index, self.manifest.count) or index.d != bits:
                raise IndexNotFoundError(f"{self.generation}: {index_file(d)} holds {index.ntotal} vectors of "
                                         f"{index.d} dims, the manifest {self.manifest.count} of {bits}; "
                                         "rebuild the index")
            _set_search_params(index, self.manifest.index_params, d)
            self._indexes[d] = index
        return self._indexes[d]

    def close(self) -> None:
        self.docs.close()
        self._xb.close()
        for f in self._files.values():
            f.close()
        self._files = {}

    def __enter__(self) -> IndexFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _set_search_params(index, params: dict, d: int) -> None:
    """Search-time knobs are not all saved inside FAISS files (efSearch is), so set them from the manifest."""
    nprobe = params.get("nprobe_by_dim", {}).get(str(d), params.get("nprobe"))
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = int(nprobe)
    if "ef_search" in params and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(params["ef_search"])
