import numpy as np
import pytest
import torch

from distill.pipeline.pca import PCARotation
from distill.students.losses import NestedLoss


def _cos_matrix(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def test_nested_loss_matches_hand_computation():
    s = np.array([[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, 1.0, -1.0], [2.0, 0.0, 1.0, 0.0]])
    y = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, -1.0], [0.5, 0.5, 0.0, 1.0]])
    dims, weights = [2, 4], [0.25, 1.0]
    expected = 0.0
    for d, w in zip(dims, weights):
        mse = np.mean((s[:, :d] - y[:, :d]) ** 2)
        cos = np.mean(1 - np.sum(s[:, :d] * y[:, :d], 1)
                      / (np.linalg.norm(s[:, :d], axis=1) * np.linalg.norm(y[:, :d], axis=1)))
        diff = _cos_matrix(s[:, :d]) - _cos_matrix(y)  # the teacher side is always full width
        rel = np.mean(diff[~np.eye(3, dtype=bool)] ** 2)
        expected += w * (2.0 * mse + 0.5 * cos + 3.0 * rel)
    loss = NestedLoss(dims, weights, mse=2.0, cosine=0.5, relational=3.0)
    total, logs = loss(torch.tensor(s, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    assert float(total) == pytest.approx(expected, rel=1e-10)
    assert set(logs) == {f"{t}@{d}" for t in ("mse", "cos", "rel") for d in dims}


def test_nested_loss_is_zero_for_a_perfect_student_and_skips_zero_weights():
    y = torch.randn(8, 16, dtype=torch.float64)
    total, logs = NestedLoss([4, 8, 16], mse=1.0, cosine=1.0, relational=0.0)(y.clone(), y)
    assert float(total) == pytest.approx(0.0, abs=1e-12)
    assert not any(k.startswith("rel") for k in logs)


def test_pca_rotation_is_orthonormal_ordered_and_keeps_cosines():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12)) * np.linspace(3, 0.1, 12)  # anisotropic
    x = x @ np.linalg.qr(rng.normal(size=(12, 12)))[0]  # hide the axes
    pca = PCARotation.fit(x)
    R = pca.components.astype(np.float64)
    assert np.allclose(R.T @ R, np.eye(12), atol=1e-5)
    assert np.all(np.diff(pca.explained) <= 1e-6)
    y = pca.transform(x)
    assert np.all(np.diff((y.astype(np.float64) ** 2).mean(0)) <= 1e-4)  # leading dims hold the most
    assert np.allclose(_cos_matrix(y), _cos_matrix(x), atol=1e-5)  # a rotation: cosines preserved


def test_pca_save_load_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(50, 6))
    pca = PCARotation.fit(x, center=True, whiten=True)
    pca.save(tmp_path / "pca.npz")
    again = PCARotation.load(tmp_path / "pca.npz")
    assert np.array_equal(pca.transform(x), again.transform(x))
