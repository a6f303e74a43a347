"""What both training loops share: the run's options, the process group, frozen batch norm, the endless
shuffled order of a round's items, the resumable state file and when it is written (:class:`StateSchedule`)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from benchmarks.core.atomic import atomic_write_bytes
from benchmarks.core.errors import InputError
from datasets.base import LoadedDataset

log = logging.getLogger(__name__)
STATE_SECONDS = 60.0  # the state is written at least this often, so a short run that is killed keeps its work


@dataclass(frozen=True)
class TrainOptions:
    steps: int
    seed: int = 0
    device: str = "cpu"
    state: Path | None = None           # resumable training state, rewritten after each round
    validation: LoadedDataset | None = None  # places split: keep the weights of the epoch with the best recall@5


def init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group (nccl on GPUs, else gloo) when launched by it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def freeze_batchnorm(model: nn.Module) -> None:
    """Batch norm uses its running statistics (and keeps them) while the rest trains: for small batches."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def round_queries(trainable: np.ndarray, per_round: int, round_index: int, seed: int) -> np.ndarray:
    """The round's queries: a slice of the endless sequence of per-epoch shuffles of the trainable queries."""
    n = len(trainable)
    first = round_index * per_round
    epochs = range(first // n, (first + per_round - 1) // n + 1)
    order = np.concatenate([trainable[np.random.default_rng([seed, e, 0xE]).permutation(n)] for e in epochs])
    offset = first - epochs[0] * n
    return order[offset:offset + min(per_round, n)]


def run_binding(model: nn.Module, split: LoadedDataset, recipe: Any, options: TrainOptions,
                scheduled_steps: bool) -> str:
    """sha256 of what decides a run's weights: the method and its config, the recipe, the seed, the training
    (and validation) images, the weights the run starts from, and the number of steps where the learning-rate
    schedule depends on it (``scheduled_steps``; else a run may be extended). A state file is bound to it."""
    validation = options.validation
    digest = hashlib.sha256(json.dumps({
        "method": type(model).__name__, "config": repr(getattr(model, "config", None)),
        "recipe": dataclasses.asdict(recipe), "seed": options.seed,
        "steps": options.steps if scheduled_steps else None,
        "images": [str(p) for p in split.db_paths + split.query_paths],
        "validation": None if validation is None else [str(p) for p in validation.db_paths + validation.query_paths],
    }, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_state(path: Path | None, steps: int | None = None, binding: str | None = None,
               fields: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The resumable state at ``path`` (None: none yet); a damaged file, one lacking ``fields`` or one written
    by a run with another :func:`run_binding` is an error saying to delete it. A state found is logged (rank
    0): the run resumes from its step, of ``steps``, and deleting the file starts afresh."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise InputError(f"unreadable training state ({type(error).__name__}); delete it to start afresh", path) \
            from None
    missing = [f for f in fields if f not in state] if isinstance(state, dict) else list(fields or ["a dict"])
    if missing:
        raise InputError(f"damaged training state (no {', '.join(missing)}); delete it to start afresh", path)
    if binding is not None and state.get("binding") != binding:
        raise InputError("training state of another run (another seed, config, recipe, steps, data or starting "
                         "weights); rerun with that run's arguments, or delete it to start afresh", path)
    if not dist.is_initialized() or dist.get_rank() == 0:
        log.info("resuming from step %s of %s saved in %s (an interrupted run); delete that file to start afresh",
                 state.get("step", "?"), "?" if steps is None else steps, path)
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write the resumable state atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class StateSchedule:
    """When a loop writes its resumable state: every ``every`` steps (None: the loop decides), once
    :data:`STATE_SECONDS` have passed since the last write, and after a SIGINT / SIGTERM, which stops the run
    once the step in progress is done and saved (:meth:`stop_if_asked`); a second signal stops it at once.
    A context manager: the handlers are installed in the main thread and the previous ones restored on exit."""

    def __init__(self, path: Path | None, every: int | None = None) -> None:
        self.path, self.every = path, every
        self.signal: int | None = None
        self._last = time.monotonic()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StateSchedule:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._note) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("%s: stopping after this step, once the training state is saved (again to stop at once)",
                    signal.Signals(signum).name)

    def due(self, step: int, steps: int) -> bool:
        """Whether to write the state after ``step`` of ``steps``."""
        return (self.signal is not None or step == steps or time.monotonic() - self._last >= STATE_SECONDS
                or (self.every is not None and step % self.every == 0))

    def saved(self) -> None:
        """The loop wrote its state: the clock restarts."""
        self._last = time.monotonic()

    def stop_if_asked(self, step: int, steps: int, saved_step: int) -> None:
        """Raise KeyboardInterrupt, saying where the run can resume, if a signal came."""
        if self.signal is None:
            return
        where = (f"the state of step {saved_step} is in {self.path}: the same command resumes from there"
                 if self.path is not None and self.path.exists() else "no state file: nothing is kept")
        log.warning("interrupted at step %d of %d; %s", step, steps, where)
        raise KeyboardInterrupt
