"""Data-parallel training (DDP): this process's share of each batch and the gradient all-reduce.

The training loop sees one `Replicas`: a single process by default (`Replicas()`: every batch
whole, the module unwrapped, figures as they are), or rank r of w processes in a torch.distributed
process group that a launcher (Ray Train's TorchTrainer) has already joined. Rank r takes
`batch[r::w]` of every global batch: with the same seed and permutation on every rank, the shards of
one step are the DistributedSampler-style split of the batch a single process would take, so one
replica (w=1) trains exactly as the single-process loop does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist


class Replicas:
    """Rank `rank` of `world` data-parallel training processes (default: the only one)."""

    def __init__(self, *, rank: int = 0, world: int = 1) -> None:
        self.rank = rank
        self.world = world

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and logs progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def shard(self, batch: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """This rank's rows of a global batch."""
        return batch[self.rank :: self.world]

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel over module when a process group is up (its backward all-reduces
        the gradients to their mean over ranks), else module itself."""
        if not self.distributed:
            return module
        return torch.nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index or 0] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # no batch norm: nothing to sync per step
        )

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of value over ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / dist.get_world_size()

    def from_main(self, values: Sequence[float], device: torch.device) -> tuple[float, ...]:
        """Rank 0's values on every rank, so that decisions taken on them (best epoch, early stop)
        cannot differ between ranks by a last-bit rounding."""
        if not self.distributed:
            return tuple(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return tuple(float(v) for v in t.tolist())

    def same_everywhere(self, model: torch.nn.Module) -> bool:
        """Whether every rank holds the very same weights (what DDP's synced steps guarantee)."""
        if not self.distributed:
            return True
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        every: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(every, digest.hexdigest())
        return len(set(every)) == 1


class Towers(torch.nn.Module):
    """CLIP's two towers in one forward, so that DDP sees the whole step and syncs its gradients."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, pixel_values: torch.Tensor, tokens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled image and text features (not normalised) and the clamped logit scale."""
        image = _pooled(self.model.get_image_features(pixel_values=pixel_values))
        text = _pooled(self.model.get_text_features(**tokens))
        return image, text, self.model.logit_scale.exp().clamp(max=100.0)


def _pooled(output: Any) -> torch.Tensor:
    return output.pooler_output if hasattr(output, "pooler_output") else output  # type: ignore[no-any-return]
