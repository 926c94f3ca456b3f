"""The order in which training photos are visited: seeded per epoch, sharded over processes, resumable.

Ours rather than torch's DistributedSampler because a resumed run must skip exactly the batches it already
trained on, and class-balanced sampling (weights 1/class count) must shard over processes the same way.
"""

from __future__ import annotations

from typing import Iterator

import torch


class EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of dataset indices for one epoch on one process.

    The epoch's order depends only on (seed, epoch): every process draws the same global order, takes
    every world_size-th batch, and a resumed run can start at any batch.
    """

    def __init__(self, targets: list[int], batch_size: int, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, balanced: bool = False, start_batch: int = 0):
        self.targets = torch.as_tensor(targets)
        self.batch_size = batch_size
        self.seed, self.epoch = seed, epoch
        self.rank, self.world_size = rank, world_size
        self.balanced = balanced
        self.start_batch = start_batch

    def batches_per_epoch(self) -> int:
        """Full batches per process (a partial last batch is dropped: MixUp needs even, equal batches)."""
        return len(self.targets) // (self.batch_size * self.world_size)

    def _global_order(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.targets)
        if not self.balanced:
            return torch.randperm(n, generator=generator)
        counts = torch.bincount(self.targets).float()
        weights = 1.0 / counts[self.targets]  # each class drawn equally often on average
        return torch.multinomial(weights, n, replacement=True, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._global_order()
        per_step = self.batch_size * self.world_size
        for batch in range(self.start_batch, self.batches_per_epoch()):
            chunk = order[batch * per_step:(batch + 1) * per_step]
            yield chunk[self.rank::self.world_size].tolist()

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start_batch)
