"""Qdrant as an index backend: one collection, one named vector per prefix size, streamed ingestion that resumes.

Layout of an index folder with ``backend: qdrant``::

    INDEX_DIR/
      CURRENT                the live generation's name, as for FAISS (written last by a build)
      gen-000001/manifest.json   backend, location (a server URL, or none: local mode), collection, dims, ...
      qdrant/                local mode only: Qdrant's embedded storage (``QdrantClient(path=...)``)
      qdrant-pending.json    while a build or an add is under way: what it writes (removed when it is done)

Points: id = row number, a named vector ``d{size}`` per prefix size (cos: each prefix re-normalized,
``Distance.COSINE``; dot: the raw prefixes, ``Distance.DOT``), payload ``{"text", "row"}``. Writing a
point again replaces it, so an ingest killed at any moment and run again finds the ids already there
(one scroll of ids) and upserts only the others: every text ends up exactly once. ``int8`` and ``binary``
are Qdrant's scalar and binary quantization, searched with rescoring on the original vectors.

The client is the same for both locations; local mode is pure Python (exact search, a SQLite commit
per point), fine for tests and tens of thousands of points; real sizes want a server
(``docker run -p 6333:6333 qdrant/qdrant``). ``QDRANT_API_KEY`` is read here, where the client is made.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from distill import faults
from distill.errors import CorpusError, DistillError
from distill.index.add import texts_sha256
from distill.index.build import _check_dims
from distill.index.models import EmbeddingModel, embed, model_dims, model_identity, model_spec
from distill.index.precision import Metric, Precision
from distill.index.search import prefix
from distill.index.store import (
    CURRENT,
    LOCK,
    Manifest,
    gen_name,
    is_index_folder,
    live_generation,
    remove_stale,
    switch_generation,
    writer_lock,
)
from distill.io import save_json

logger = logging.getLogger(__name__)

BACKEND = "qdrant"
LOCAL_DIR = "qdrant"
PENDING = "qdrant-pending.json"
UPSERT_BATCH = 512  # points per upsert request
TIMEOUT_S = 20  # seconds per request to a server
INSTALL = 'pip install "distill[qdrant]"'
DOCKER = "docker run -p 6333:6333 qdrant/qdrant"


class QdrantError(DistillError):
    """qdrant-client missing, a server that cannot be reached or refuses, a collection that is not ours."""


def qdrant():
    """``(qdrant_client, models)``. :raises QdrantError: qdrant-client is not installed."""
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError:
        raise QdrantError(f"the qdrant backend needs the qdrant-client package: {INSTALL}") from None
    return qdrant_client, models


def vector_name(d: int) -> str:
    return f"d{d}"


def where(folder: Path, url: str | None) -> str:
    return url if url else f"local mode in {folder / LOCAL_DIR}"


@contextmanager
def guarded(folder: Path, url: str | None):
    """Client errors as one line that says what to do."""
    try:
        yield
    except QdrantError:
        raise
    except Exception as e:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(e, UnexpectedResponse) and e.status_code in (401, 403):
            raise QdrantError(f"Qdrant at {url} refused the request ({e.status_code}): set QDRANT_API_KEY to "
                              "its API key") from None
        if isinstance(e, UnexpectedResponse):
            detail = " ".join(str(e.content or b"", "utf-8", "replace").split())[:200]
            raise QdrantError(f"Qdrant at {where(folder, url)} answered {e.status_code}: {detail}") from None
        if isinstance(e, ResponseHandlingException) or "connect" in type(e).__name__.lower():
            cause = " ".join(str(getattr(e, "source", None) or e).split())[:200]
            raise QdrantError(f"cannot reach Qdrant at {url} ({cause}); start a server (`{DOCKER}`) or check "
                              "--url, or leave --url out for local mode") from None
        raise


def connect(folder: Path, url: str | None):
    """A client of the server at ``url``, or of local mode inside ``folder`` (one process at a time).

    :raises QdrantError: no qdrant-client, or the local storage open in another process.
    """
    qdrant_client, _ = qdrant()
    if url:
        return qdrant_client.QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY") or None,
                                          timeout=TIMEOUT_S, check_compatibility=False)
    try:
        return qdrant_client.QdrantClient(path=str(folder / LOCAL_DIR))
    except RuntimeError as e:
        if "already accessed" not in str(e):
            raise
        raise QdrantError(f"{folder / LOCAL_DIR} is open in another process (Qdrant local mode serves one at a "
                          "time): stop `distill serve` or the other command first, or use a server with --url"
                          ) from None


def vectors_config(models, dims: list[int], metric: Metric, precision: Precision) -> dict:
    distance = models.Distance.COSINE if metric is Metric.COS else models.Distance.DOT
    quant = None
    if precision is Precision.INT8:
        quant = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8,
                                                                                 always_ram=True))
    elif precision is Precision.BINARY:
        quant = models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
    return {vector_name(d): models.VectorParams(size=d, distance=distance, quantization_config=quant) for d in dims}


def create_collection(client, collection: str, dims: list[int], metric: Metric, precision: Precision,
                      local: bool) -> None:
    _, models = qdrant()
    client.create_collection(collection, vectors_config=vectors_config(models, dims, metric, precision))
    if not local:  # readers filter on the row (row < count); local mode has no payload indexes
        client.create_payload_index(collection, "row", field_schema=models.PayloadSchemaType.INTEGER, wait=True)


def check_collection(client, collection: str, dims: list[int], metric: Metric, where_: str) -> None:
    """:raises QdrantError: a collection whose named vectors are not ``dims`` of ``metric``."""
    _, models = qdrant()
    params = client.get_collection(collection).config.params.vectors
    want = vectors_config(models, dims, metric, Precision.FLOAT32)
    have = {k: (v.size, v.distance) for k, v in params.items()} if isinstance(params, dict) else {}
    if have != {k: (v.size, v.distance) for k, v in want.items()}:
        raise QdrantError(f"collection {collection} at {where_} holds vectors {have}, not this index's "
                          f"{sorted(want)}; pass --overwrite or another --collection")


def row_filter(models, lo: int | None = None, hi: int | None = None):
    return models.Filter(must=[models.FieldCondition(key="row", range=models.Range(gte=lo, lt=hi))])


def existing_ids(client, collection: str, first: int, n: int) -> set[int]:
    """Ids of the points already there in ``first .. first + n - 1`` (one scroll of ids, no vectors)."""
    _, models = qdrant()
    found: set[int] = set()
    offset = None
    flt = row_filter(models, first, first + n) if first else None
    while True:
        points, offset = client.scroll(collection, scroll_filter=flt, limit=10_000, offset=offset,
                                       with_payload=False, with_vectors=False)
        found.update(int(p.id) for p in points if first <= int(p.id) < first + n)
        if offset is None:
            return found


def ingest(client, collection: str, model: EmbeddingModel, texts: list[str], first: int, dims: list[int],
           metric: Metric, batch_size: int = 64, upsert_batch: int = UPSERT_BATCH, progress: bool = False) -> int:
    """Upsert ``texts`` as points ``first ..``, skipping those already there; returns how many were written.

    A crash point (``qdrant:batch``) follows each upsert, for the kill-and-rerun tests.
    """
    from tqdm.auto import tqdm

    _, models = qdrant()
    have = existing_ids(client, collection, first, len(texts))
    todo = [i for i in range(len(texts)) if first + i not in have]
    if have:
        logger.info("%s: %d of %d points already there, upserting the other %d", collection, len(have), len(texts),
                    len(todo))
    with tqdm(total=len(texts), initial=len(texts) - len(todo), desc="upserting", unit="text",
              disable=not progress) as bar:
        for start in range(0, len(todo), upsert_batch):
            rows = todo[start:start + upsert_batch]
            x = embed(model, [texts[i] for i in rows], max(dims), metric, batch_size)  # (b, width)
            ids = [first + i for i in rows]
            client.upsert(collection, wait=True, points=models.Batch(
                ids=ids, vectors={vector_name(d): prefix(x, d, metric).tolist() for d in dims},
                payloads=[{"text": texts[i], "row": first + i} for i in rows]))
            bar.update(len(rows))
            faults.maybe_crash("qdrant:batch")
    return len(todo)


def count_points(client, collection: str) -> int:
    return int(client.count(collection, exact=True).count)


def _pending(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PENDING).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _finish(folder: Path, gen: Path, manifest: Manifest) -> None:
    manifest.save(gen)
    faults.maybe_crash("qdrant:manifest")
    switch_generation(folder, gen)
    (folder / PENDING).unlink(missing_ok=True)
    remove_stale(folder, gen)


def build_qdrant(model: EmbeddingModel, texts: list[str], out: str | Path, dims: list[int] | None = None,
                 url: str | None = None, collection: str | None = None, spec: str | Path | None = None,
                 batch_size: int = 64, upsert_batch: int = UPSERT_BATCH, progress: bool = False,
                 overwrite: bool = False, metric: Metric | str = Metric.COS,
                 precision: Precision | str = Precision.FLOAT32, space_spec: str | Path | None = None) -> Manifest:
    """Embed ``texts`` into a Qdrant collection and write the index folder ``out`` (its manifest last).

    Rerun after a kill with the same arguments, it finds the points already written and upserts the rest.
    :param url: a Qdrant server; None: local mode inside ``out``.
    :param collection: the collection's name (default: the folder's name).
    :raises CorpusError: no texts. :raises QdrantError: see :func:`connect`, a collection that exists already.
    :raises DistillError: bad dims, an existing folder that is not this build's.
    """
    if not texts:
        raise CorpusError("the corpus holds no texts to index")
    metric, precision = Metric(metric), Precision(precision)
    qdrant()
    out = Path(out)
    dims = _check_dims(dims or model_dims(model), int(model.dim))
    collection = collection or out.resolve().name
    identity = model_identity(model)
    key = texts_sha256([json.dumps([identity, dims, metric.value, precision.value, url, collection]), *texts])
    done, resume = _claim_folder(out, key, overwrite)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    where_ = where(out, url)
    with writer_lock(out), guarded(out, url):
        client = connect(out, url)
        try:
            exists = client.collection_exists(collection)  # the first request: an unreachable server fails here
            save_json(out / PENDING, {"op": "build", "key": key, "count": len(texts), "url": url,
                                      "collection": collection})
            if exists and not resume:
                if not overwrite:
                    raise QdrantError(f"collection {collection} already exists at {where_}: pass --overwrite "
                                      "to replace it, or --collection another name")
                client.delete_collection(collection)
            if not exists or not resume:
                create_collection(client, collection, dims, metric, precision, local=url is None)
            else:
                check_collection(client, collection, dims, metric, where_)
            faults.maybe_crash("qdrant:created")
            ingest(client, collection, model, texts, 0, dims, metric, batch_size, upsert_batch, progress)
            n = count_points(client, collection)
        finally:
            client.close()
        if n != len(texts):
            raise QdrantError(f"collection {collection} at {where_} holds {n} points after the ingest of "
                              f"{len(texts)} texts; is another command writing it? rebuild with --overwrite")
        faults.maybe_crash("qdrant:ingested")
        manifest = Manifest(model=identity, model_spec=model_spec(spec) if spec else str(identity.get("name", "")),
                            dims=dims, count=len(texts), index_type="exact" if url is None else "hnsw",
                            index_params={"build_key": key}, metric=metric.value, precision=precision.value,
                            space=identity.get("space"),
                            space_spec=model_spec(space_spec) if space_spec else None, backend=BACKEND,
                            location=url, collection=collection)
        gen = out / gen_name(1)
        gen.mkdir(exist_ok=True)
        _finish(out, gen, manifest)
    return manifest


def _claim_folder(out: Path, key: str, overwrite: bool) -> tuple[Manifest | None, bool]:
    """Make ``out`` ready for the build of ``key``: (its manifest when this very build is already done, whether
    an interrupted run of it is resumed). Another build in it is cleared with ``overwrite``, refused without.

    :raises DistillError: a non-empty folder without ``overwrite``, or one that is not an index folder.
    """
    pending = _pending(out) if out.is_dir() else None
    built = (out / CURRENT).is_file()
    if built and not overwrite:
        done = _manifest_or_none(out)
        if done is not None and done.index_params.get("build_key") == key and done.generation == 1:
            (out / PENDING).unlink(missing_ok=True)  # this very build, killed after its switch (or run again)
            logger.info("%s already holds this build: nothing to do", out)
            return done, False
    resume = pending is not None and pending.get("key") == key and not built
    if out.exists() and any(p.name != LOCK for p in out.iterdir()) and not resume:
        if not overwrite:
            what = ("holds an interrupted build of other texts or options: run that command again, or pass "
                    "--overwrite" if pending and not built else "exists and is not empty; pass --overwrite or "
                    "another --out")
            raise DistillError(f"{out} {what}")
        if not is_index_folder(out) and not pending:
            raise DistillError(f"{out} is not an index folder; refusing to overwrite it")
        _drop_old(out)
        shutil.rmtree(out)
    return None, resume


def _manifest_or_none(out: Path) -> Manifest | None:
    try:
        return Manifest.load(out)
    except DistillError:
        return None


def _drop_old(out: Path) -> None:
    """Before an ``--overwrite``: the server collection of the Qdrant index (or interrupted build) in ``out``."""
    try:
        m = Manifest.load(out)
        url, collection = (m.location, m.collection) if m.backend == BACKEND else (None, None)
    except DistillError:
        pending = _pending(out) or {}
        url, collection = pending.get("url"), pending.get("collection")
    if url and collection:
        try:
            with guarded(out, url):
                client = connect(out, url)
                try:
                    if client.collection_exists(collection):
                        client.delete_collection(collection)
                finally:
                    client.close()
        except QdrantError as e:  # the folder is replaced all the same; the old collection stays where it is
            logger.warning("could not delete the old collection %s: %s", collection, e)


def add_qdrant(folder: str | Path, model: EmbeddingModel, texts: list[str], batch_size: int = 64,
               upsert_batch: int = UPSERT_BATCH, progress: bool = False) -> tuple[int, int]:
    """Append ``texts`` to a Qdrant index as points ``count ..``; returns (first new id, count after).

    The manifest of the next generation is written once every point is there; readers only see rows
    below their manifest's count. A rerun of a killed add upserts what it had not written; a rerun of
    a finished one (the same texts as the last add) adds nothing; another add first deletes what a
    killed one left.
    :raises IndexMismatchError: another model. :raises QdrantError: see :func:`connect`.
    """
    if not texts:
        raise CorpusError("no texts to add")
    folder = Path(folder)
    key = texts_sha256(texts)
    live_generation(folder)
    with writer_lock(folder):
        live = live_generation(folder)
        m = Manifest.read(live)
        m.check_model(model_identity(model))
        last = m.last_add or {}
        if last.get("sha256") == key and last.get("first", -1) + last.get("count", -1) == m.count:
            logger.info("these texts are the last add of %s (ids %d..%d): nothing to add", folder, last["first"],
                        m.count - 1)
            (folder / PENDING).unlink(missing_ok=True)  # an add killed after its switch
            remove_stale(folder, live)
            return int(last["first"]), m.count
        first, n = m.count, len(texts)
        pending = _pending(folder) or {}
        resume = pending.get("op") == "add" and pending.get("key") == key and pending.get("first") == first
        metric = Metric(m.metric)
        with guarded(folder, m.location):
            client = connect(folder, m.location)
            try:
                if not resume and count_points(client, m.collection) > m.count:  # a killed add of other texts
                    _, models = qdrant()
                    client.delete(m.collection, wait=True, points_selector=models.FilterSelector(
                        filter=row_filter(models, lo=m.count)))
                save_json(folder / PENDING, {"op": "add", "key": key, "first": first, "count": n})
                faults.maybe_crash("qdrant:add-started")
                ingest(client, m.collection, model, texts, first, m.dims, metric, batch_size, upsert_batch,
                       progress)
                total = count_points(client, m.collection)
            finally:
                client.close()
        if total != first + n:
            raise QdrantError(f"collection {m.collection} holds {total} points after adding ids {first}.."
                              f"{first + n - 1}; is another command writing it?")
        m_new = replace(m, count=first + n, generation=m.generation + 1,
                        last_add={"first": first, "count": n, "sha256": key})
        nxt = folder / gen_name(m_new.generation)
        nxt.mkdir(exist_ok=True)
        _finish(folder, nxt, m_new)
    return first, m_new.count


def live_count(folder: Path, m: Manifest) -> int:
    """Points in the collection now (the manifest's count, plus those of an add under way or killed)."""
    with guarded(folder, m.location):
        client = connect(folder, m.location)
        try:
            return count_points(client, m.collection)
        finally:
            client.close()
