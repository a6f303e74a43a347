"""The training loop of the classification-trained methods (DOLG): ArcFace over landmark classes, in one process
or under torchrun (DDP).

Each step draws ``batch_size`` images from an endless sequence of per-epoch shuffles of the training split,
crops each at random (scale and aspect, as pycls's ``random_sized_crop``) to ``image_size`` and flips half of
them; under torchrun every process takes its share of the batch and DDP averages the gradients. The learning
rate follows a cosine over the run after a linear warm-up (the official configuration: 5 of 100 epochs,
from 0.1 x). Every random choice derives from (seed, step), and the state is written every
``state_every`` steps, at least once a minute and when SIGINT / SIGTERM stops the run, so an interrupted run
resumes and ends with the same weights.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from benchmarks.core.errors import InputError
from benchmarks.evaluation.extract import load_image
from benchmarks.training.common import (
    StateSchedule,
    TrainOptions,
    freeze_batchnorm,
    init_distributed,
    load_state,
    round_queries,
    run_binding,
    save_state,
)
from datasets.base import ClassLabels, LoadedDataset
from methods.base import ExtractionProtocol
from methods.losses import ArcFace
from methods.recipes import ClassificationRecipe

log = logging.getLogger(__name__)


def learning_rate(recipe: ClassificationRecipe, step: int, steps: int) -> float:
    """Cosine decay from ``lr`` over ``steps``, times a linear warm-up from 0.1 over the first steps."""
    lr = 0.5 * recipe.lr * (1 + math.cos(math.pi * step / max(steps, 1)))
    warmup = recipe.warmup_fraction * steps
    if step < warmup:
        alpha = step / warmup
        lr *= 0.1 * (1 - alpha) + alpha
    return lr


def random_crop(image: torch.Tensor, size: int, min_area: float, rng: np.random.Generator) -> torch.Tensor:
    """(3, H, W) -> (3, size, size): a random region of ``min_area``..1 of the image with aspect 3/4..4/3
    (10 tries, else the central square), resized bilinearly, flipped left-right with probability 1/2."""
    _, height, width = image.shape
    side = min(height, width)
    top, left, h, w = (height - side) // 2, (width - side) // 2, side, side
    for _ in range(10):
        area = height * width * rng.uniform(min_area, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cand_w, cand_h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cand_w <= width and 0 < cand_h <= height:
            top, left = int(rng.integers(0, height - cand_h + 1)), int(rng.integers(0, width - cand_w + 1))
            h, w = cand_h, cand_w
            break
    crop = F.interpolate(image[None, :, top:top + h, left:left + w], size=(size, size), mode="bilinear",
                         align_corners=False, antialias=True)[0]
    return crop.flip(-1) if rng.random() < 0.5 else crop


class _Classifier(nn.Module):
    """The model and its ArcFace head as one module: DDP then averages the gradients of both."""

    def __init__(self, model: nn.Module, head: ArcFace) -> None:
        super().__init__()
        self.model, self.head = model, head

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(images), labels)


def train_classification(model: Any, split: LoadedDataset, recipe: ClassificationRecipe,
                         options: TrainOptions) -> dict[str, Any]:
    """Train ``model`` (an nn.Module whose forward gives (B, D) descriptors, with ``descriptor_dim`` and
    ``protocol``) in place with an ArcFace head over the split's classes; returns what the run did."""
    started = time.perf_counter()
    rank, world = init_distributed()
    if recipe.batch_size % world:
        raise ValueError(f"batch_size {recipe.batch_size} must be a multiple of the {world} processes")
    gt = split.ground_truth
    if not isinstance(gt, ClassLabels):
        raise ValueError("classification training needs a split labelled by class (e.g. synth_landmarks train)")
    classes, targets = np.unique(np.asarray(gt.labels), return_inverse=True)
    if len(split.db_paths) < recipe.batch_size:
        raise InputError(f"{len(split.db_paths)} training images, fewer than one batch of {recipe.batch_size}",
                         split.db_paths[0].parent if split.db_paths else None)
    device = torch.device(options.device)
    head = ArcFace(model.descriptor_dim, len(classes), recipe.margin, recipe.scale)
    model.to(device)
    head.to(device)
    parameters = [*model.parameters(), *head.parameters()]
    optimiser = (torch.optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov,
                                 weight_decay=recipe.weight_decay) if recipe.optimizer == "sgd"
                 else torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay))
    binding = run_binding(model, split, recipe, options, scheduled_steps=True)
    state = load_state(options.state, options.steps, binding, ("model", "head", "optimiser", "step", "losses"))
    step, losses = 0, []
    if state:
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        optimiser.load_state_dict(state["optimiser"])
        step, losses = state["step"], list(state["losses"])
    trained: nn.Module = _Classifier(model, head)
    if world > 1 and device.type == "cuda":  # batch statistics over all processes' images (CUDA only in torch)
        trained = nn.SyncBatchNorm.convert_sync_batchnorm(trained)
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(trained)
    protocol = ExtractionProtocol(max_size=None, mean=model.protocol.mean, std=model.protocol.std,
                                  exif_orientation=model.protocol.exif_orientation)
    model.train()
    if recipe.frozen_batchnorm:
        freeze_batchnorm(model)
    with StateSchedule(options.state, recipe.state_every) as schedule:  # a signal: save, then stop
        while step < options.steps:
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(recipe, step, options.steps)
            batch = round_queries(np.arange(len(targets)), recipe.batch_size, step, options.seed)
            mine = range(rank, len(batch), world)  # each crop's randomness derives from its place in the whole batch
            images = torch.stack([random_crop(load_image(split.db_paths[batch[j]], protocol), recipe.image_size,
                                              recipe.min_crop_area, np.random.default_rng([options.seed, step, j]))
                                  for j in mine]).to(device)
            labels = torch.from_numpy(targets[batch[rank::world]]).to(device)
            loss = trained(images, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if world > 1:
                dist.all_reduce(reduced := loss.detach().clone())
                losses.append(float(reduced) / world)
            else:
                losses.append(float(loss.detach()))
            step += 1
            if step % 10 == 0 or step == options.steps:
                log.info("step %d/%d: loss %.4f (mean of the last 10 %.4f)", step, options.steps, losses[-1],
                         float(np.mean(losses[-10:])))
            if options.state is not None and rank == 0 and schedule.due(step, options.steps):
                save_state(options.state, {"model": model.state_dict(), "head": head.state_dict(),
                                           "optimiser": optimiser.state_dict(), "step": step, "losses": losses,
                                           "binding": binding})
                schedule.saved()
            schedule.stop_if_asked(step, options.steps, step)
    model.eval()
    return {"steps": step, "seed": options.seed, "processes": world, "classes": len(classes),
            "images": len(targets), "loss_first_10": _mean(losses[:10]), "loss_last_10": _mean(losses[-10:]),
            "wall_time_s": round(time.perf_counter() - started, 3)}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
