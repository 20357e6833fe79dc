"""A tiny deterministic embedding model with the student contract, for index and compare tests."""

from __future__ import annotations

import hashlib

import numpy as np


class FakeModel:
    """Hashed character trigrams through a fixed random projection, with a decaying spectrum.

    Similar strings get similar vectors (shared trigrams), and the leading dims carry most of the
    variance, like a Matryoshka student. ``semantic=False`` gives a random vector per text instead:
    a model that knows nothing.
    """

    def __init__(self, dim: int = 32, dims: tuple[int, ...] = (8, 16, 32), seed: int = 0, semantic: bool = True,
                 buckets: int = 2048):
        self.dim, self.dims, self.seed, self.semantic, self.buckets = dim, list(dims), seed, semantic, buckets
        rng = np.random.default_rng(seed)
        scale = (np.arange(1, dim + 1) ** -0.5).astype(np.float32)  # (dim,) decaying, Matryoshka-like
        self.proj = (rng.standard_normal((buckets, dim)) * scale).astype(np.float32)  # (buckets, dim)

    def identity(self) -> dict:
        return {"name": f"fake-{self.seed}-{'ngram' if self.semantic else 'random'}", "weights": str(self.seed),
                "dim": self.dim}

    def _features(self, text: str) -> np.ndarray:
        f = np.zeros(self.buckets, dtype=np.float32)
        padded = f"  {text.lower()} "
        for i in range(len(padded) - 2):
            h = int.from_bytes(hashlib.blake2b(padded[i:i + 3].encode(), digest_size=4).digest(), "little")
            f[h % self.buckets] += 1.0
        return f

    def encode(self, texts: list[str], dim: int | None = None, batch_size: int = 256,
               progress: bool = False, normalize: bool = True) -> np.ndarray:
        """(N, dim) float32; ``normalize=False``: the raw vectors, whose norms grow with the text's length."""
        if self.semantic:
            x = np.stack([self._features(t) for t in texts]) @ self.proj  # (N, dim)
        else:
            seeds = [int.from_bytes(hashlib.blake2b(f"{self.seed}:{t}".encode(), digest_size=4).digest(), "little")
                     for t in texts]
            x = np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds])
        x = x[:, :dim].astype(np.float32)
        if not normalize:
            return x
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def test_fake_model_follows_the_contract():
    m = FakeModel()
    x = m.encode(["a cat", "a cat", "a dog"], dim=16)
    assert x.shape == (3, 16) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(x[0], x[1])
    full = m.encode(["a dog"])
    np.testing.assert_allclose(x[2], full[0, :16] / np.linalg.norm(full[0, :16]), rtol=1e-5)
    raw = m.encode(["a dog", "a dog chases the red ball across the long garden"], normalize=False)
    np.testing.assert_allclose(raw[0] / np.linalg.norm(raw[0]), full[0], rtol=1e-5)
    assert np.linalg.norm(raw[1]) > 1.5 * np.linalg.norm(raw[0])  # norms carry the text's length
