"""Which clips each step of each rank sees: a pure function of (seed, step, rank), so a resumed
or distributed run needs no iterator state and reproduces the uninterrupted run exactly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


class EpochIndexed:
    """Dataset adapter taking ``(epoch, index)`` items: sets the wrapped dataset's epoch (random
    clip starts of video data depend on it) before reading, so a clip is a function of (seed,
    epoch, index) in any worker process, with no state carried between steps."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        epoch, index = item
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, 0x5EED, epoch]).permutation(n)


class StepBatchSampler:
    """Batch sampler yielding the clip indices of steps ``start..end-1`` for one rank.

    Global batch of step s = positions [s*B*W, (s+1)*B*W) of the stream made by concatenating
    per-epoch permutations seeded by (seed, epoch); rank r takes the r-th block of B. So the data
    order is a function of (seed, step) alone, and W ranks with batch B see exactly the clips one
    process with batch B*W would.
    """

    def __init__(self, n: int, batch: int, seed: int, start: int, end: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.end, self.rank, self.world = start, end, rank, world
        self._cache: dict[int, np.ndarray] = {}

    def indices(self, step: int) -> list[tuple[int, int]]:
        """(epoch, clip index) pairs of this rank's share of step ``step``."""
        first = step * self.batch * self.world + self.rank * self.batch
        out = []
        for p in range(first, first + self.batch):
            epoch, i = divmod(p, self.n)
            if epoch not in self._cache:
                if len(self._cache) > 2:
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = _permutation(self.seed, epoch, self.n)
            out.append((epoch, int(self._cache[epoch][i])))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.end):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.end - self.start)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of the global torch RNG for (seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)
