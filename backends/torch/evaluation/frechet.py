"""Frechet distance between Gaussian feature statistics (FVD when the features come from an I3D).

The feature network is the user's own, as TorchScript (``.pt``) or ONNX (``.onnx``), mapping
videos (N, C, T, H, W) in [-1, 1] to (N, D). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ...files import one_line


class EvalError(ValueError):
    """A one-line, user-facing evaluation error (bad feature file, bad samples file, ...)."""


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition; tiny
    negative eigenvalues from rounding are clipped to 0."""
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr(sqrt(sigma1 sigma2)) for covariance matrices.

    sigma1 sigma2 is not symmetric, but it is similar to S = sqrt(sigma1) sigma2 sqrt(sigma1),
    which is symmetric PSD; so its eigenvalues are S's and the trace of its principal square
    root is sum(sqrt(eig(S))). This needs only ``eigh`` (no scipy.linalg.sqrtm)."""
    s1 = _sqrtm_psd(np.asarray(sigma1, dtype=np.float64))
    inner = s1 @ np.asarray(sigma2, dtype=np.float64) @ s1
    w = np.linalg.eigvalsh((inner + inner.T) / 2.0)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared 2-Wasserstein (Frechet) distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2)), in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance needs mu (D,) and sigma (D, D) for both sides; got mu1 {mu1.shape}, "
                         f"sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))
    return max(value, 0.0)  # rounding can leave -1e-12 for identical statistics


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise EvalError(f"features must be (N, D) with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


# --------------------------------------------------------------------------- feature networks

FeatureFn = Callable[[np.ndarray], np.ndarray]


def load_feature_extractor(path: str | os.PathLike[str], *, device: str = "cpu",
                           batch_size: int = 16) -> FeatureFn:
    """Load a user-supplied feature network: TorchScript (``.pt``/``.pth``/``.ts``, via
    ``torch.jit.load``) or ONNX (``.onnx``, via onnxruntime on CPU). Returns a function
    mapping float32 videos (N, C, T, H, W) in [-1, 1] to float64 features (N, D)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"feature network not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EvalError(f"cannot load ONNX feature network {path}: {one_line(exc)}") from None
        input_name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {input_name: batch.astype(np.float32)})[0])
    elif suffix in (".pt", ".pth", ".ts", ".jit", ".torchscript"):
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream but is the format asked for
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(path), map_location=device).eval()
        except Exception as exc:
            raise EvalError(f"cannot load TorchScript feature network {path}: {one_line(exc)}") from None

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = net(torch.from_numpy(batch.astype(np.float32)).to(device))
            return out.float().cpu().numpy()
    else:
        raise EvalError(f"feature network {path}: unknown format {suffix!r}; use TorchScript (.pt) or ONNX (.onnx)")

    def extract(videos: np.ndarray) -> np.ndarray:
        chunks = []
        for i in range(0, len(videos), batch_size):
            try:
                out = run(np.ascontiguousarray(videos[i:i + batch_size]))
            except Exception as exc:
                raise EvalError(f"feature network {path} failed on input {videos[i:i + batch_size].shape}: "
                                f"{one_line(exc)}") from None
            chunks.append(np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1))
        feats = np.concatenate(chunks)
        if not np.all(np.isfinite(feats)):
            raise EvalError(f"feature network {path} returned NaN or Inf")
        return feats

    return extract
