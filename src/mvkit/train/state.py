"""The resume state of a training run: written atomically, read without unpickling anything.

One file (resume.pt) holds model, optimizer, scheduler and EMA state, the position in the run (epoch, batch),
the early-stopping bookkeeping, the metric history and every RNG state, so a resumed run continues exactly
where the saved one stopped. It is saved with torch.save and loaded with weights_only=True: only tensors and
plain containers, so numpy's RNG state is stored as a tensor.
"""

from __future__ import annotations

import io
import pickle
import random
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from mvkit.files import write_atomically
from mvkit.errors import MvkitError


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed in the current epoch
    updates: int = 0  # optimizer steps so far
    best_val_loss: float = float("inf")
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def capture_rng() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_rest": [numpy_state[0], int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, position, has_gauss, cached = state["numpy_rest"]
    np.random.set_state((name, state["numpy_keys"].numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants the nested tuples it gave; a round trip may turn them into lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python's, numpy's and torch's global generators for a block, then give the caller's states back."""
    saved = capture_rng()
    seed_everything(seed)
    try:
        yield
    finally:
        restore_rng(saved)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_state(path: Path, progress: Progress, model: torch.nn.Module, optimizer, scheduler, ema=None) -> None:
    state = {
        "progress": asdict(progress),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "rng": capture_rng(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MvkitError(f"no resume state at {path}: nothing to resume (start without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # not torch's message: it advises weights_only=False, which would run whatever the file holds
        raise MvkitError(f"resume state {path} holds Python objects besides tensors, so it is not loaded (it was "
                         "not written by mvkit). Start again with --overwrite, or into a new --out") from None
    except Exception as exc:  # truncated or not a torch file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MvkitError(f"resume state {path} is unreadable ({type(exc).__name__}: {reason}). Start again "
                         "with --overwrite, or into a new --out") from None
    state["progress"] = Progress(**state["progress"])
    return state
