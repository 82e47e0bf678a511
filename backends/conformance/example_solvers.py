"""The example backend's solvers (spec 17), in plain NumPy and written from the papers' forms rather
than the spec's: ratios of noise levels instead of expm1 where they are equivalent, DPM-Solver++(2M)
with r = h_{i-1} / h_i, and UniC's weights from its linear system (Zhao et al. 2023) solved by
np.linalg.solve. Coefficients are float64 host numbers; data arithmetic runs in the compute dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np


def _lam(a: float, s: float) -> float:
    if a == 0.0:
        return -math.inf
    return math.inf if s == 0.0 else math.log(a / s)


def _finite(name: str, arr: Any) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"argument '{name}' contains NaN or Inf; the spec requires finite values")
    return arr


def _levels(alphas: Any, sigmas: Any) -> tuple[list[float], list[float], list[float]]:
    a = [float(v) for v in _finite("alphas", alphas).ravel()]
    s = [float(v) for v in _finite("sigmas", sigmas).ravel()]
    if np.ndim(alphas) != 1 or np.ndim(sigmas) != 1 or len(a) != len(s) or len(a) < 2:
        raise ValueError("arguments 'alphas' and 'sigmas' must be 1-D of one length N + 1 >= 2")
    lam = [_lam(x, y) for x, y in zip(a, s, strict=True)]
    if any(not lam[i + 1] > lam[i] for i in range(len(lam) - 1)):
        raise ValueError("argument 'sigmas': the noise levels must strictly decrease (lambda strictly increasing)")
    if any(v == 0.0 for v in a[1:]) or any(v == 0.0 for v in s[:-1]):
        raise ValueError("arguments 'alphas' / 'sigmas': only the first alpha and the final sigma may be 0")
    return a, s, lam


def _ddim(x: np.ndarray, d: np.ndarray, s_from: float, s_to: float, a_to: float, h: float, dt: type) -> np.ndarray:
    """DPM-Solver++(1): (sigma_to / sigma_from) x + alpha_to (1 - e^{-h}) d."""
    return dt(s_to / s_from) * x + dt(-a_to * math.expm1(-h)) * d


def _unic_weights(h: float, rks: list[float]) -> np.ndarray:
    """UniC (bh2) weights: sum_j rho_j rk_j^(k-1) = k! phi_k-terms / B(h), k = 1..p (Zhao et al. 2023)."""
    hh = -h
    big_b = math.expm1(hh)
    r_rows, b = [], []
    phi, fact = big_b / hh - 1.0, 1.0
    for k in range(1, len(rks) + 1):
        r_rows.append([rk ** (k - 1) for rk in rks])
        b.append(phi * fact / big_b)
        fact *= k + 1
        phi = phi / hh - 1.0 / fact
    return np.linalg.solve(np.array(r_rows), np.array(b))


def solve(denoise: Callable[[np.ndarray, int], Any], x: np.ndarray, alphas: Any, sigmas: Any, solver: str,
          noise: Any, dt: type, *, eta: float = 1.0) -> np.ndarray:
    a, s, lam = _levels(alphas, sigmas)
    n = len(a) - 1
    x = _finite("x", x).astype(dt)
    z = None if noise is None else _finite("noise", noise).astype(dt)
    if z is not None and z.shape != (n, *x.shape):
        raise ValueError(f"argument 'noise' must have shape (N, *x.shape) = {(n, *x.shape)}, got {z.shape}")
    if any(v < 0 for v in a + s):
        raise ValueError("arguments 'alphas' and 'sigmas' must be >= 0")

    def D(y: np.ndarray, i: int) -> np.ndarray:
        return np.asarray(denoise(y, i)).astype(dt)

    def order(i: int) -> int:  # multistep: first order at the first and the final step
        return 1 if i in (0, n - 1) else 2

    history: list[np.ndarray] = []
    x_prev = None
    for i in range(n):
        h = lam[i + 1] - lam[i]
        if solver == "euler":
            x = _ddim(x, D(x, i), s[i], s[i + 1], a[i + 1], h, dt)
        elif solver == "euler_ancestral":
            if not 0.0 <= eta <= 1.0:
                raise ValueError(f"argument 'eta' must lie in [0, 1], got {eta}")
            # k-diffusion's split of sigma_{i+1}^2 into the deterministic and the fresh part.
            ratio2 = (s[i + 1] / s[i] * a[i] / a[i + 1]) ** 2 if a[i] > 0 and s[i + 1] > 0 else 0.0
            up = eta * s[i + 1] * math.sqrt(max(1.0 - ratio2, 0.0))
            down = math.sqrt(max(s[i + 1] ** 2 - up**2, 0.0))
            x0 = D(x, i)
            x = dt(down / s[i]) * x + dt(a[i + 1] - a[i] * down / s[i]) * x0
            if up > 0.0:
                if z is None:
                    raise ValueError("argument 'noise' is required for euler_ancestral with eta > 0")
                x = x + dt(up) * z[i]
        elif solver == "heun":
            x0a = D(x, i)
            xe = _ddim(x, x0a, s[i], s[i + 1], a[i + 1], h, dt)
            if a[i] > 0.0 and s[i + 1] > 0.0:  # EDM Algorithm 1 on y = x / alpha over sig = sigma / alpha
                x0b = D(xe, i + 1)
                da = (x - dt(a[i]) * x0a) / dt(s[i])
                db = (xe - dt(a[i + 1]) * x0b) / dt(s[i + 1])
                xe = xe + dt(0.5 * (s[i + 1] - a[i + 1] * s[i] / a[i])) * (db - da)
            x = xe
        elif solver in ("dpmpp_2m", "unipc"):
            m = D(x, i)
            if solver == "unipc" and i > 0:  # UniC: re-solve the step i-1 -> i with m
                hc = lam[i] - lam[i - 1]
                if order(i - 1) == 1:
                    c = history[0] + dt(0.5) * (m - history[0])
                else:
                    r1 = (lam[i - 2] - lam[i - 1]) / hc
                    if math.isinf(r1):  # the level before is pure noise: its difference carries no weight
                        c = history[0] + dt(_unic_weights(hc, [1.0])[0]) * (m - history[0])
                    else:
                        rho = _unic_weights(hc, [r1, 1.0])
                        c = (history[0] + dt(rho[0] / r1) * (history[1] - history[0])
                             + dt(rho[1]) * (m - history[0]))
                x = _ddim(x_prev, c, s[i - 1], s[i], a[i], hc, dt)
            d = m
            if order(i) == 2:
                r = (lam[i] - lam[i - 1]) / h
                d = dt(1.0 + 0.5 / r) * m - dt(0.5 / r) * history[0]
            x_prev = x
            x = _ddim(x, d, s[i], s[i + 1], a[i + 1], h, dt)
            history = [m, *history[:1]]
        else:
            raise ValueError(f"argument 'solver': unknown solver {solver!r}")
    return x
