"""Appending texts to an index folder: all or nothing, safe to rerun, without reading the stored vectors.

The add writes the next generation beside the live one and switches ``CURRENT`` to it last (see
:mod:`distill.index.store`), so a crash at any moment leaves the index as it was before the add or
as it is after it. Its steps, each followed by a crash point for the fault-injection tests:

1. remove what a crashed add left (generations other than the live one, temporary files);
2. the docstore rows from the live count on, replaced in one transaction (invisible to readers,
   who stop at their manifest's count);
3. the earlier vector chunks hard-linked into the new generation, the new vectors as one new chunk;
4. each FAISS index read from the live generation, extended, written into the new one;
5. the new manifest, then ``CURRENT``, then the old generation removed.

A rerun after a crash before step 5's switch starts again from the live generation. A rerun after
the switch finds the same texts recorded as the last add (their sha256) and changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from distill import faults
from distill.errors import CorpusError
from distill.index.ivf import extend_index
from distill.index.models import EmbeddingModel, embed, model_identity
from distill.index.precision import Precision, binary_codes
from distill.index.search import prefix
from distill.index.store import (
    DOCS,
    DocStore,
    Manifest,
    chunk_file,
    gen_name,
    index_file,
    link_or_copy,
    live_generation,
    read_faiss,
    remove_stale,
    save_faiss,
    switch_generation,
    writer_lock,
)
from distill.io import save_npy

logger = logging.getLogger(__name__)


def texts_sha256(texts: list[str]) -> str:
    """A digest of a list of texts (their order and boundaries included): the identity of an add."""
    h = hashlib.sha256()
    for t in texts:
        data = t.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def add_to_index(folder: str | Path, model: EmbeddingModel, texts: list[str], batch_size: int = 64,
                 progress: bool = False, upsert_batch: int | None = None) -> tuple[int, int]:
    """Append ``texts`` to an index without rebuilding it; returns (first new id, count after).

    A Qdrant index (``backend: qdrant``) is extended by :func:`distill.index.qdrant.add_qdrant` (``upsert_batch``:
    points per upsert request there). Texts equal to the index's last add are taken as a rerun of it (one
    that may have been killed after its switch) and add nothing: the result is that add's (first id, count).
    :raises IndexMismatchError: ``model`` is not the model the index was built with.
    :raises CorpusError: no texts. :raises DistillError: another command is writing the index.
    """
    if not texts:
        raise CorpusError("no texts to add")
    folder = Path(folder)
    if Manifest.load(folder).backend == "qdrant":
        from distill.index.qdrant import add_qdrant

        return add_qdrant(folder, model, texts, batch_size=batch_size, progress=progress,
                          **({"upsert_batch": upsert_batch} if upsert_batch else {}))
    key = texts_sha256(texts)
    live_generation(folder)  # a clear error for a folder that is no index, before taking its lock
    with writer_lock(folder):
        live = live_generation(folder)
        m = Manifest.read(live)
        m.check_model(model_identity(model))
        left = remove_stale(folder, live)
        if left:
            logger.info("removed what an interrupted add left in %s: %s", folder, ", ".join(left))
        faults.maybe_crash("add:cleaned")
        last = m.last_add or {}
        if last.get("sha256") == key and last.get("first", -1) + last.get("count", -1) == m.count:
            logger.info("these texts are the last add of %s (ids %d..%d): nothing to add", folder, last["first"],
                        m.count - 1)
            return int(last["first"]), m.count
        x_new = embed(model, texts, m.width, m.metric, batch_size, progress)  # (n, width), as stored
        first, n = m.count, len(texts)
        nxt = folder / gen_name(m.generation + 1)
        nxt.mkdir()
        with DocStore(folder / DOCS) as docs:
            docs.put(first, texts)
        faults.maybe_crash("add:docs")
        for i in range(len(m.chunks)):
            link_or_copy(live / chunk_file(i), nxt / chunk_file(i))
        faults.maybe_crash("add:linked")
        save_npy(nxt / chunk_file(len(m.chunks)), x_new)
        faults.maybe_crash("add:chunk")
        for d in m.dims:
            index = read_faiss(live / index_file(d), m.precision)
            x_d = prefix(x_new, d, m.metric)
            extend_index(index, binary_codes(x_d) if m.precision == Precision.BINARY else x_d, first)
            save_faiss(nxt / index_file(d), index)
            del index
            faults.maybe_crash(f"add:index-{d}")
        m_new = replace(m, count=first + n, chunks=[*m.chunks, n], generation=m.generation + 1,
                        last_add={"first": first, "count": n, "sha256": key})
        m_new.save(nxt)
        faults.maybe_crash("add:manifest")
        switch_generation(folder, nxt)
        faults.maybe_crash("add:switched")
        remove_stale(folder, nxt)
        faults.maybe_crash("add:done")
    return first, m_new.count
