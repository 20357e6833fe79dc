"""PCA rotation of the teacher space: leading components first, so prefixes hold the most of it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class PCARotation:
    components: np.ndarray  # (D_t, D_t) orthonormal columns, ordered by explained variance, descending
    explained: np.ndarray  # (D_t,) variance along each column
    mean: np.ndarray  # (D_t,) subtracted before rotating when centered (zeros otherwise)
    whiten: bool = False
    # RMS norm of the fitted vectors: rotated targets are divided by it, so they have unit RMS norm
    # whatever the teacher (MiniLM's are unit vectors, BERT mean pooling and GPT states have norms in
    # the tens), and one learning rate and one MSE weight fit every teacher. Cosines are unchanged.
    scale: float = 1.0

    @classmethod
    def fit(cls, x: np.ndarray, center: bool = False, whiten: bool = False) -> PCARotation:
        """Fit on (N, D_t) teacher vectors.

        Uncentered by default: the rotation then preserves every cosine of the teacher at full width,
        and the leading columns keep the largest share of each vector's norm (what a prefix needs).
        """
        return cls.fit_chunks([x], center=center, whiten=whiten)

    @classmethod
    def fit_chunks(cls, chunks, center: bool = False, whiten: bool = False) -> PCARotation:
        """:meth:`fit` on the rows of several (n_i, D_t) chunks, summed one chunk at a time (memory: one chunk)."""
        n, total, outer = 0, None, None
        for x in chunks:
            x = np.asarray(x, dtype=np.float64)
            if total is None:
                total, outer = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
            n, total, outer = n + len(x), total + x.sum(0), outer + x.T @ x
        n = max(n, 1)
        mean = total / n if center else np.zeros(len(total))
        moment = outer / n - np.outer(mean, mean)  # (D_t, D_t): E[(x - m)(x - m)^T]
        eigval, eigvec = np.linalg.eigh(moment)
        order = np.argsort(eigval)[::-1]
        eigvec = eigvec[:, order]
        eigvec *= np.sign(eigvec[np.abs(eigvec).argmax(0), range(eigvec.shape[1])])  # deterministic signs
        explained = np.clip(eigval[order], 0, None)
        scale = float(np.sqrt(explained.sum())) if explained.sum() > 0 else 1.0
        return cls(eigvec.astype(np.float32), explained.astype(np.float32), mean.astype(np.float32), whiten,
                   1.0 if whiten else scale)

    def transform(self, x: np.ndarray) -> np.ndarray:
        y = (np.asarray(x, dtype=np.float32) - self.mean) @ self.components  # (N, D_t)
        return (y * self.factors()).astype(np.float32)

    def factors(self) -> np.ndarray:
        """(D_t,) what each rotated column is multiplied by: 1 / sqrt(variance) when whitening, else 1 / scale."""
        if self.whiten:
            return (1 / np.sqrt(self.explained + 1e-8)).astype(np.float32)
        return np.full(len(self.explained), 1 / self.scale, dtype=np.float32)

    def fingerprint(self) -> str:
        """``pca-<16 hex>``: a hash of everything the rotation does, the name of the space it makes."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.components, self.mean, self.factors()):
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        return "pca-" + h.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        np.savez(path, components=self.components, explained=self.explained, mean=self.mean,
                 whiten=np.array(self.whiten), scale=np.array(self.scale))

    @classmethod
    def load(cls, path: str | Path) -> PCARotation:
        z = np.load(path)
        return cls(z["components"], z["explained"], z["mean"], bool(z["whiten"]),
                   float(z["scale"]) if "scale" in z else 1.0)
