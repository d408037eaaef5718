"""Streaming least squares with a pull toward a prior: dense, or one small problem per channel.

Both accumulate ``XᵀX``, ``XᵀY``, the row count and ``Σy²`` (float64) batch by batch, so memory
does not depend on the number of samples, and solve
``argmin_θ ‖Y − Xθᵀ‖²/n + λ‖θ − θ₀‖²`` with ``λ = ridge · trace(XᵀX/n)/D``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DenseFit", "ChannelFit"]


def _regularized(gram: np.ndarray, count: int, ridge: float) -> tuple[np.ndarray, float]:
    a = gram / max(count, 1)
    lam = ridge * max(float(np.trace(a, axis1=-2, axis2=-1).mean()) / a.shape[-1], 1e-12)
    return a + lam * np.eye(a.shape[-1]), lam


def _fit_db(energy: float, sse: float) -> float:
    """``10·log10(Σy² / Σ(y − ŷ)²)`` on the fitted rows."""
    return float(10.0 * np.log10(energy / sse)) if sse > 0 and energy > 0 else float("inf")


class _Normal:
    """Normal equations accumulated sample by sample: ``gram = XᵀX``, ``cross = XᵀY``, rows, ``Σy²``."""

    def __init__(self) -> None:
        self.gram: np.ndarray | None = None
        self.cross: np.ndarray | None = None
        self.count, self.energy = 0, 0.0


class DenseFit(_Normal):
    """Every output reads every feature (Conv patches, Gemm/MatMul rows): ``design [rows, D]``."""

    def add(self, design: np.ndarray, target: np.ndarray) -> None:
        """Add rows ``design [S, D]`` with targets ``[S, O]``."""
        if self.gram is None:
            self.gram = np.zeros((design.shape[1],) * 2)
            self.cross = np.zeros((design.shape[1], target.shape[1]))
        self.gram += design.T @ design
        self.cross += design.T @ target
        self.count += len(design)
        self.energy += float(np.sum(target * target))

    def solve(self, prior: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
        """``θ [O, D]`` and the fit in dB."""
        lhs, lam = _regularized(self.gram, self.count, ridge)
        rhs = self.cross / self.count + lam * prior.T
        try:
            theta = np.linalg.solve(lhs, rhs).T
        except np.linalg.LinAlgError:
            theta = np.linalg.lstsq(lhs, rhs, rcond=None)[0].T
        sse = self.energy - 2.0 * float(np.sum(theta * self.cross.T)) + float(np.sum((theta @ self.gram) * theta))
        return theta, _fit_db(self.energy, sse)


class ChannelFit(_Normal):
    """Output channel ``c`` reads only channel ``c``'s features (depthwise): ``design [rows, C, K]``."""

    def add(self, design: np.ndarray, target: np.ndarray) -> None:
        """Add rows ``design [S, C, K]`` with targets ``[S, C]``."""
        if self.gram is None:
            self.gram = np.zeros((design.shape[1], design.shape[2], design.shape[2]))
            self.cross = np.zeros(design.shape[1:])
        self.gram += np.einsum("sck,scl->ckl", design, design)
        self.cross += np.einsum("sck,sc->ck", design, target)
        self.count += len(design)
        self.energy += float(np.sum(target * target))

    def solve(self, prior: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
        """``θ [C, K]`` and the fit in dB."""
        lhs, lam = _regularized(self.gram, self.count, ridge)
        rhs = self.cross / self.count + lam * prior
        theta = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        sse = self.energy - 2.0 * float(np.sum(theta * self.cross)) + float(np.einsum("ck,ckl,cl->", theta, self.gram, theta))
        return theta, _fit_db(self.energy, sse)
