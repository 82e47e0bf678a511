"""Spec 1.7: invalid inputs, which every backend must reject with an error naming the argument.

Each mutation below turns a valid random case of an op into an invalid one, of one kind that
clause 1.7 lists: NaN or Inf in an input array, a timestep out of range, ``s >= t``, mismatched
shapes, an unknown name (schedule, spacing, prediction, variance, sampler), ``N > T``, a noise
array of the wrong shape. The reference decides what is invalid: a mutation becomes a check only
where vdm_ref itself raises ValueError or TypeError with a message naming one of the arguments
(e.g. NaN in the noise of a DDIM step with eta = 0 is not an error, since the noise is not read).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np

from . import cases as C

# (kind, the invalid case, the argument names an error message may name)
Mutation = tuple[str, C.Case, tuple[str, ...]]

# The names clause 1.7 lists, where an op takes them.
NAMED_CHOICES = ("name", "spacing", "prediction", "variance", "sampler", "final", "time_shift")


def _float_inputs(case: C.Case) -> list[str]:
    # points feed the ideal model of a sample case, not the op itself.
    return [k for k, v in case.inputs.items() if np.asarray(v).dtype.kind == "f" and k != "points"]


def _with(case: C.Case, kind: str, *, inputs: dict | None = None, params: dict | None = None) -> C.Case:
    return dataclasses.replace(case, id=f"errors/{case.op}/{kind}", source="errors",
                               inputs={**case.inputs, **(inputs or {})}, params={**case.params, **(params or {})},
                               want=None)


def _poison(value: float) -> Callable[[C.Case], list[Mutation]]:
    """NaN (or Inf) in one element of each float input array."""
    label = "nan" if np.isnan(value) else "inf"

    def mutate(case: C.Case) -> list[Mutation]:
        out = []
        for name in _float_inputs(case):
            bad = np.array(case.inputs[name], dtype=np.float64, copy=True)
            if bad.size == 0:
                continue
            bad.flat[bad.size // 2] = value
            out.append((f"{label}-in-{name}", _with(case, f"{label}-in-{name}", inputs={name: bad}), (name,)))
        return out

    return mutate


def _timestep_value(case: C.Case, key: str) -> object | None:
    return case.inputs.get(key, case.params.get(key))


def _set_timestep(case: C.Case, key: str, value: object, kind: str) -> C.Case:
    # Scalars are parameters and arrays inputs, as in the golden vectors.
    arr = np.asarray(value, dtype=np.int64)
    new = _with(case, kind)
    new.inputs.pop(key, None)
    new.params.pop(key, None)
    if arr.ndim:
        new.inputs[key] = arr
    else:
        new.params[key] = int(arr)
    return new


def _out_of_range(case: C.Case) -> list[Mutation]:
    """t = T (one past the last timestep), s = -2 (below clean data), timesteps[0] = T."""
    if case.schedule is None:
        return []
    T = int(case.schedule["T"])
    out = []
    for key, bad in (("t", T), ("s", -2), ("timesteps", T)):
        value = _timestep_value(case, key)
        if value is None:
            continue
        arr = np.array(value, dtype=np.int64, copy=True)
        if arr.ndim:
            arr[0] = bad
        else:
            arr = np.asarray(bad, dtype=np.int64)
        kind = f"{key}-out-of-range"
        out.append((kind, _set_timestep(case, key, arr, kind), (key,)))
    return out


def _s_not_below_t(case: C.Case) -> list[Mutation]:
    t, s = _timestep_value(case, "t"), _timestep_value(case, "s")
    if t is None or s is None:
        return []
    return [("s-not-below-t", _set_timestep(case, "s", t, "s-not-below-t"), ("s", "t"))]


def _mismatched_shapes(case: C.Case) -> list[Mutation]:
    """The last float input shaped like the first gets one more element on its last axis."""
    names = _float_inputs(case)
    if len(names) < 2 or case.op == "sample":
        return []
    first = np.asarray(case.inputs[names[0]])
    same = [n for n in names[1:] if np.asarray(case.inputs[n]).shape == first.shape]
    if not same or first.ndim == 0:
        return []
    arr = np.asarray(case.inputs[same[-1]])
    longer = np.concatenate([arr, arr[..., :1]], axis=-1)
    return [("mismatched-shapes", _with(case, "mismatched-shapes", inputs={same[-1]: longer}), (names[0], same[-1]))]


def _unknown_names(case: C.Case) -> list[Mutation]:
    return [(f"unknown-{key}", _with(case, f"unknown-{key}", params={key: f"no-such-{key}"}), (key,))
            for key in NAMED_CHOICES if isinstance(case.params.get(key), str)]


def _n_above_t(case: C.Case) -> list[Mutation]:
    if case.op != "inference_timesteps":
        return []
    return [("N-above-T", _with(case, "N-above-T", params={"N": int(case.params["T"]) + 1}), ("N", "T"))]


def _no_levels(case: C.Case) -> list[Mutation]:
    """A schedule of noise levels (spec 15) with N = 0 steps: it has at least one."""
    if not isinstance(case.params.get("N"), int) or "T" in case.params:
        return []
    return [("N-below-1", _with(case, "N-below-1", params={"N": 0}), ("N",))]


def _noise_rows(case: C.Case) -> list[Mutation]:
    """The loop's noise with N rows instead of N + 1 (spec 7.6)."""
    if case.op != "sample" or "noise" not in case.inputs:
        return []
    return [("noise-shape", _with(case, "noise-shape", inputs={"noise": case.inputs["noise"][:-1]}), ("noise",))]


MUTATIONS: dict[str, Callable[[C.Case], list[Mutation]]] = {
    "nan": _poison(float("nan")),
    "inf": _poison(float("inf")),
    "out-of-range": _out_of_range,
    "s-not-below-t": _s_not_below_t,
    "mismatched-shapes": _mismatched_shapes,
    "unknown-name": _unknown_names,
    "N-above-T": _n_above_t,
    "N-below-1": _no_levels,
    "noise-shape": _noise_rows,
}


def names_argument(message: str, names: tuple[str, ...]) -> bool:
    """Whether an error message names one of ``names`` as a word (quoted or not)."""
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message) for n in names)


def mutations(base: C.Case) -> list[C.Case]:
    """Every invalid variant of ``base`` (before asking the reference which ones it rejects), each
    with the argument names its error may give in ``error_names``."""
    return [dataclasses.replace(case, error_names=names)
            for mutate in MUTATIONS.values() for _, case, names in mutate(base)]


def base_case(op: str, seed: int, dtype: str) -> C.Case:
    """The valid case the invalid ones start from: its own stream, so other cases do not move."""
    return C.random_case(op, C.RngDraw(C.op_rng(seed, f"1.7/{op}")), dtype, 0)
