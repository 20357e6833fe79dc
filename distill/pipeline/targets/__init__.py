"""The teacher target cache: one store per (teacher identity, target kind), one entry per text.

Layout of one store, ``ROOT/<kind>-v2-<key>/`` (``key`` hashes the teacher's identity: name,
weights fingerprint, pooling, layer, max length, dtype and autocast, and the kind)::

    store.json                    what the store holds (format, kind, teacher identity, width)
    shard-<h>.keys.npy            (n, 2) uint64: the 128-bit hash of each text (blake2b of its UTF-8)
    shard-<h>.pooled.npy          (n, D) float32 pooled teacher vectors
    shard-<h>.tokens.npy          ("token") (sum of lengths, D) float16 contextual states
    shard-<h>.offsets.npy         ("token") (n + 1,) int64 offsets into tokens
    shard-<h>.ids.npy             ("token") (sum of lengths,) int32 teacher token ids
    shard-<h>.json                commit marker, written last: count, bytes and sha256 of each file
    vocab.json, input_embeddings.npy   ("vocab") token strings and raw input-embedding rows

Shards are append-only and named by the hash of their keys. The index (text hash -> shard, row) is
rebuilt from the shards' key files when a store is opened (16 bytes a text). A corpus that grows by
1% labels only that 1%; ``--limit``, a reordered corpus or duplicated texts label nothing new.

Labeling is resumable and deterministic: the texts missing from the store are cut into shards of
``shard_size`` in corpus order, so a killed run's rerun cuts the rest exactly as the first run
would have, and gives byte-identical files. Under ``accelerate launch`` rank r labels shards
r, r + world, ... of the missing ones. Hashes are computed while writing; opening a store checks
file sizes only, :meth:`TargetStore.verify` (``distill targets --verify``) re-hashes everything.
"""

from distill.pipeline.targets.labeling import label, label_vocab
from distill.pipeline.targets.store import (
                                            FORMAT_VERSION,
                                            KEY_DTYPE,
                                            STORE_NAME,
                                            KeyIndex,
                                            ShardFiles,
                                            TargetKind,
                                            TargetStore,
                                            shard_name,
                                            store_identity,
                                            store_key,
                                            text_keys,
                                            vocab_keys,
)
from distill.pipeline.targets.view import TargetView, VocabTargets, vocab_targets

__all__ = ["FORMAT_VERSION", "KEY_DTYPE", "STORE_NAME", "KeyIndex", "ShardFiles", "TargetKind", "TargetStore",
           "TargetView", "VocabTargets", "label", "label_vocab", "shard_name", "store_identity", "store_key",
           "text_keys", "vocab_keys", "vocab_targets"]
