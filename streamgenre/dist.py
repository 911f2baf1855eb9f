"""Where this process runs: its device, its place in a torchrun job, and the reductions training needs.

Single-process runs go through the same calls (world size 1, no process group), so train.py
has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from streamgenre.errors import InputError
from streamgenre.units import count_of


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process prints and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process to talk to."""
        return self.world_size > 1


def check_device_name(name: str) -> None:
    """Reject a --device value early, before any work starts (CUDA's presence is checked later)."""
    if name not in ("auto", "cpu", "cuda") and not name.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one; an unknown name, or CUDA without one, is an input error."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {name} was asked for, but torch sees no CUDA device")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"--device {name} was asked for, but torch sees {count_of(torch.cuda.device_count(), 'CUDA device')} (cuda:0 is the first)")
    return device


def dist_info_from_env() -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (defaults: a single process)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_process_group(info: DistInfo, device: torch.device) -> None:
    """Join the torchrun job: nccl on CUDA, gloo on CPU. A no-op for a single process."""
    if info.enabled and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def destroy_process_group() -> None:
    """Leave the job cleanly (a no-op when none was joined)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes, in place (unchanged for a single process)."""
    if torch_dist.is_initialized():
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True only if `flag` is true on every process (one tiny all-reduce; local value alone otherwise)."""
    if not torch_dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)], device=device)
    torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MIN)
    return bool(value.item())


def check_workers(workers: int | None) -> None:
    """Refuse a negative `--workers` (None: `default_workers`); each command calls it before its first expensive step."""
    if workers is not None and workers < 0:
        raise InputError(f"--workers must be >= 0 (0 reads in the main process), got {workers}")


def default_workers() -> int:
    """One worker process per CPU core this process may use (loader workers, pack's pool)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
