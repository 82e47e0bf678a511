"""A sampling plan: what a sampler visits, in vdm terms (spec 6, 14, 15), whoever described it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import vdm_ref
from vdm_ref import sigmas as levels


@dataclass(frozen=True)
class SchedulePlan:
    """What a sampler runs, in vdm terms."""

    scheduler: str  # where it was read from: a diffusers class, or "vdm"
    family: str  # vp | flow | edm (spec 14)
    timesteps: np.ndarray  # what the network is given at each network call (diffusers' scheduler.timesteps)
    sigmas: np.ndarray | None  # the levels incl. the final one (scheduler.sigmas); None where it has none
    sampler: str  # a row of vdm_ref.SAMPLERS or vdm_ref.solvers.SOLVERS
    prediction: str  # a vdm prediction type (spec 4 / 14.3)
    options: dict = field(default_factory=dict)  # the sampler's vdm options (clip, final_abar, ...)
    schedule: dict | None = None  # vp: the vdm schedule that gives its abar table (spec 2)
    notes: tuple[str, ...] = ()  # every place the config or diffusers departs from the spec, in words
    alpha: np.ndarray = field(default=None, repr=False)  # (alpha, sigma) of spec 14.1 at each step's level and
    sigma: np.ndarray = field(default=None, repr=False)  # the final one: what a log-SNR plot draws

    def to_dict(self) -> dict:
        """JSON-ready: lists of floats or ints, no NumPy types."""
        return {
            "scheduler": self.scheduler, "family": self.family,
            "timesteps": self.timesteps.tolist(),
            "sigmas": None if self.sigmas is None else self.sigmas.tolist(),
            "sampler": self.sampler, "prediction": self.prediction, "options": dict(self.options),
            "schedule": self.schedule, "notes": list(self.notes),
        }

    def log_snr(self) -> np.ndarray:
        """log(alpha^2 / sigma^2) at each level (spec 14.6: 2 lambda), +inf at clean data."""
        with np.errstate(divide="ignore"):
            return 2.0 * (np.log(self.alpha) - np.log(self.sigma))


def _vp_levels(abar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.sqrt(abar), np.sqrt(1.0 - abar)


def vp_plan(name: str, steps: int, *, spacing: str = "trailing", T: int = 1000,
            zero_terminal_snr: bool = False) -> SchedulePlan:
    """A vdm schedule (spec 2) sampled with DDIM on the spec 6 timesteps, landing on abar = 1."""
    sched = vdm_ref.make_schedule(name, T, zero_terminal_snr=zero_terminal_snr)
    ts = vdm_ref.inference_timesteps(T, steps, spacing)
    alpha, sigma = _vp_levels(np.append(sched.abar[ts], 1.0))
    spec = {"name": name, "T": T, "params": dict(sched.params), "zero_terminal_snr": zero_terminal_snr}
    return SchedulePlan("vdm", "vp", ts, None, "ddim", "eps", {"spacing": spacing}, spec, (), alpha, sigma)


def flow_plan(steps: int, *, shift: float = 1.0, mu: float | None = None, T: int = 1000) -> SchedulePlan:
    """Flow levels of spec 15.7 (one shift), sampled with Euler; the network sees T s."""
    s = levels.flow_levels(steps, shift=shift, mu=mu, s_min=1.0 / T)
    options = {"shift": shift} if mu is None else {"mu": mu}
    return SchedulePlan("vdm", "flow", T * s[:-1], s, "euler", "flow", options, None, (), 1.0 - s, s.copy())


def edm_plan(steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> SchedulePlan:
    """Karras levels (spec 15.5) and a final 0, sampled with Euler; the network sees ln(sigma) / 4."""
    sig = levels.with_final_level(levels.karras_sigmas(steps, sigma_min, sigma_max, rho), "zero")
    return SchedulePlan("vdm", "edm", 0.25 * np.log(sig[:-1]), sig, "euler", "edm", {"rho": rho}, None, (),
                        np.ones_like(sig), sig.copy())
