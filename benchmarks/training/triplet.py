"""The training loop of the triplet-trained methods (NetVLAD, MSCFP), in one process or under torchrun (DDP).

Training goes in rounds. A round starts by mining with the current weights: ``places`` recomputes the
descriptor cache of the training split and picks, for the round's queries, the best potential positive
and the hardest negatives (NetVLAD); ``classes`` embeds a mining batch and applies MSCFP's Algorithm 1.
The round's tuples are then consumed ``tuples_per_batch`` per step. Every random choice derives from
(seed, round), and a checkpoint is written after each round, so an interrupted run resumes from its last
round and ends with the same weights (SIGINT / SIGTERM stop it after the step in progress, saying so). Before
the first round the method initialises itself from local descriptors of sampled training images (k-means);
after the last it fits what is fitted, not trained (PCA-whitening).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from benchmarks.core.errors import InputError
from benchmarks.evaluation.extract import extract, load_image
from benchmarks.evaluation.metrics import recall_at_n
from benchmarks.evaluation.search import top_k_by_inner_product
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
from datasets.base import ClassLabels, LoadedDataset, PlaceGroundTruth
from methods.losses import contrastive_loss, triplet_loss
from methods.mining import PlaceMiner, mscfp_triplets, sample_mining_batch
from methods.recipes import TripletRecipe

log = logging.getLogger(__name__)

LOSSES = {"triplet": triplet_loss, "contrastive": contrastive_loss}
FROZEN_BACKBONE = "none"  # train_from value that keeps the whole backbone fixed (only the pooling trains)


@dataclass(frozen=True)
class _Tuple:
    images: tuple[Path, ...]            # anchor, positive, negatives


class _AggregateView(nn.Module):
    """``model.aggregate`` as a forward, so that DDP sees it."""

    model: Any

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.aggregate(images)


def train(model: Any, split: LoadedDataset, recipe: TripletRecipe, options: TrainOptions) -> dict[str, Any]:
    """Train ``model`` in place; returns what the run did.

    ``model`` is an nn.Module with ``protocol``, ``backbone``, ``whitening`` (or None) and the methods
    ``local_descriptors``, ``aggregate`` (what the loss sees), ``initialise(local_sample, seed)`` and
    ``finalise(training_embeddings)``, as ``methods.netvlad.VLADMethod`` has (``finalise(training_embeddings,
    labels)`` where ``finalise_with_labels`` is true: GeM's learned whitening); a model that initialises from
    something else says what through ``initialisation_input`` (see :func:`_initialisation_input`).
    """
    started = time.perf_counter()
    rank, world = init_distributed()
    if recipe.tuples_per_batch % world:
        raise ValueError(f"tuples_per_batch {recipe.tuples_per_batch} must be a multiple of the {world} processes")
    miner = _miner(split, recipe, options.seed)  # refuses a split that cannot give a tuple before any work
    device = torch.device(options.device)
    model.to(device)
    binding = run_binding(model, split, recipe, options, scheduled_steps=False)
    state = load_state(options.state, options.steps, binding,
                       ("model", "optimiser", "step", "round", "report", "miner_memory"))
    report: dict[str, Any] = state["report"] if state else {"round_losses": []}
    if state:
        model.load_state_dict(state["model"])
    else:
        log.info("initialising the model from the training split (k-means, or the method's own statistics)")
        report["initialisation"] = model.initialise(_initialisation_input(model, split, recipe, options, device),
                                                    options.seed)
    trainable = _trainable_parameters(model, recipe.train_from)
    optimiser = (torch.optim.SGD(trainable, lr=recipe.lr, momentum=recipe.momentum,
                                 weight_decay=recipe.weight_decay) if recipe.optimizer == "sgd"
                 else torch.optim.Adam(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay))
    step, round_index = (state["step"], state["round"]) if state else (0, 0)
    best: dict[str, torch.Tensor] | None = state.get("best") if state else None
    if state:
        optimiser.load_state_dict(state["optimiser"])
        if miner is not None:
            miner.memory = {int(q): n.numpy() for q, n in state["miner_memory"].items()}
    view = _AggregateView(model)
    if world > 1 and device.type == "cuda":  # batch statistics over all processes' tuples (CUDA only in torch)
        view = nn.SyncBatchNorm.convert_sync_batchnorm(view)
    trained = nn.parallel.DistributedDataParallel(view) if world > 1 else view
    saved_step = step
    with StateSchedule(options.state) as schedule:  # a signal stops the run after the step in progress
        while step < options.steps:
            tuples = _mine_round(model, split, recipe, miner, options.seed, round_index, device)
            for group in optimiser.param_groups:
                group["lr"] = _learning_rate(recipe, _epochs_before(round_index, recipe, miner, split))
            losses = []
            for start in range(0, len(tuples), recipe.tuples_per_batch):
                batch = tuples[start:start + recipe.tuples_per_batch]
                batch = batch[:len(batch) - len(batch) % world]  # a round's last, partial batch too, as whole shares
                if step >= options.steps or not batch:
                    break
                losses.append(_step(trained, model, batch[rank::world], len(batch), recipe, optimiser, device))
                step += 1
                if start + recipe.tuples_per_batch < len(tuples) and step < options.steps:  # mid-round: stop,
                    schedule.stop_if_asked(step, options.steps, saved_step)  # the last round's state is kept
            round_index += 1
            report["round_losses"].append(float(np.mean(losses)) if losses else None)
            log.info("round %d: %d tuples, mean loss %s, step %d/%d", round_index, len(tuples),
                     report["round_losses"][-1], step, options.steps)
            if _learned(report, tuples, round_index, recipe, miner, split):
                log.warning("%s", report["stopped_early"])
                break
            epoch_done = int(_epochs_before(round_index, recipe, miner, split)) > \
                int(_epochs_before(round_index - 1, recipe, miner, split))
            if options.validation is not None and (epoch_done or step >= options.steps):
                best = _validate(model, options.validation, recipe, device, step, report, best)
            if options.state is not None and rank == 0:
                save_state(options.state, {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                           "step": step, "round": round_index, "report": report, "best": best,
                                           "binding": binding,
                                           "miner_memory": {} if miner is None else
                                           {str(q): torch.from_numpy(n) for q, n in miner.memory.items()}})
                saved_step = step
            schedule.stop_if_asked(step, options.steps, saved_step)
    if best is not None:
        model.load_state_dict(best)
        report["selected_step"] = max(report["validation"], key=lambda v: v["recall@5"])["step"]
    if rank == 0:
        log.info("fitting what is fitted, not trained (whitening) on the %d training images", len(split.db_paths))
        db_embeddings = _embed(model, split.db_paths, recipe.batch_size, device, 0, 1)
        labels = getattr(split.ground_truth, "labels", None)  # a model that learns from classes takes them
        report["finalisation"] = (model.finalise(db_embeddings, np.asarray(labels))
                                  if getattr(model, "finalise_with_labels", False) else model.finalise(db_embeddings))
    report.update(steps=step, rounds=round_index, seed=options.seed, processes=world,
                  wall_time_s=round(time.perf_counter() - started, 3))
    return report


def _validate(model: Any, validation: LoadedDataset, recipe: TripletRecipe, device: torch.device, step: int,
              report: dict[str, Any], best: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Recall@5 of ``model.aggregate`` on the validation split, appended to the report; returns the weights
    of the best validation so far (the earliest of equals), as the paper selects its epoch."""
    gt = validation.ground_truth
    if not isinstance(gt, PlaceGroundTruth):
        raise ValueError("validation needs a split with GPS ground truth (a dbStruct dataset's val split)")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    db = _embed(model, validation.db_paths, recipe.batch_size, device, rank, world)
    queries = _embed(model, validation.query_paths, recipe.batch_size, device, rank, world)
    top = top_k_by_inner_product(queries, db, 5 * (gt.panorama_size or 1))
    recall = recall_at_n(top, gt.utm_queries, gt.utm_db, gt.threshold, (5,), gt.panorama_size).recall(5)
    earlier = [v["recall@5"] for v in report.setdefault("validation", [])]
    report["validation"].append({"step": step, "recall@5": recall})
    log.info("validation at step %d: recall@5 %.4f", step, recall)
    if best is None or recall > max(earlier):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    return best


def _learned(report: dict[str, Any], tuples: list[_Tuple], round_index: int, recipe: TripletRecipe,
             miner: PlaceMiner | None, split: LoadedDataset) -> bool:
    """Whether training stops early: no tuple violated the margin in any round for a whole epoch (the network
    separates every training query's positives from its negatives, so no step would change it); then says so
    in ``report["stopped_early"]``. ``report["quiet_since"]`` is the first round of the current run of empty ones."""
    if tuples:
        report.pop("quiet_since", None)
        return False
    quiet_since = report.setdefault("quiet_since", round_index - 1)
    if _epochs_before(round_index, recipe, miner, split) - _epochs_before(quiet_since, recipe, miner, split) < 1:
        return False
    report["stopped_early"] = (f"no training tuple violated the margin in rounds {quiet_since + 1}-{round_index} "
                               f"(a whole epoch): the training split is learned, training stops")
    return True


def _epochs_before(round_index: int, recipe: TripletRecipe, miner: PlaceMiner | None,
                   split: LoadedDataset) -> float:
    """Epochs completed before this round: passes over the trainable queries (places) or the training
    images (classes), counted by the queries or images that the earlier rounds mined from."""
    if miner is not None:
        return round_index * recipe.cache_refresh / len(miner.trainable_queries)
    return round_index * recipe.mining_batch / len(split.db_paths)


def _learning_rate(recipe: TripletRecipe, epochs: float) -> float:
    """The recipe's lr, halved every ``lr_halving_epochs`` completed epochs (NetVLAD: every 5) and decayed by
    ``exp(-lr_decay)`` per completed epoch (GeM)."""
    halvings = int(epochs // recipe.lr_halving_epochs) if recipe.lr_halving_epochs else 0
    return recipe.lr * 0.5 ** halvings * math.exp(-recipe.lr_decay * int(epochs))


def _trainable_parameters(model: Any, train_from: str) -> list[nn.Parameter]:
    """Freeze the backbone's parameters that come before module ``train_from`` (a child such as ``layer4``, or a
    deeper one such as ``blocks.5``) and the fitted whitening; the rest trains."""
    names = [name for name, _ in model.backbone.named_parameters()]
    if train_from in ("", FROZEN_BACKBONE):
        first = len(names) if train_from == FROZEN_BACKBONE else 0
    else:
        first = next((i for i, name in enumerate(names) if name.startswith(f"{train_from}.")), -1)
        if first < 0:
            children = [name for name, _ in model.backbone.named_children()]
            raise ValueError(f"train_from {train_from!r} is not a module of the backbone with parameters, '' or "
                             f"{FROZEN_BACKBONE!r}; its children: {children}")
    for index, (_, parameter) in enumerate(model.backbone.named_parameters()):
        parameter.requires_grad_(index >= first)
    if model.whitening is not None:
        model.whitening.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _initialisation_input(model: Any, split: LoadedDataset, recipe: TripletRecipe, options: TrainOptions,
                          device: torch.device) -> Any:
    """What ``model.initialise`` takes: sampled local descriptors (k-means), unless the model has a method
    ``initialisation_input(split, recipe, embed, seed)``; ``embed(function, paths)`` gives the (N, E) outputs of
    ``function`` on the images at ``paths``, batched, in eval mode and without gradients (REMAP's KL weights)."""
    if not hasattr(model, "initialisation_input"):
        return _local_sample(model, split, recipe, options, device)

    def embed(function: Any, paths: Sequence[Path]) -> np.ndarray:
        was_training = model.training
        model.eval()
        out = extract(function, list(paths), model.protocol, batch_size=recipe.batch_size, device=device)
        model.train(was_training)
        return out

    return model.initialisation_input(split, recipe, embed, options.seed)


def _local_sample(model: Any, split: LoadedDataset, recipe: TripletRecipe, options: TrainOptions,
                  device: torch.device) -> np.ndarray:
    """(M, D) local descriptors from ``cluster_images`` random training images, ``cluster_descriptors`` at most."""
    rng = np.random.default_rng([options.seed, 0xC1])
    paths = list(split.db_paths) + list(split.query_paths)
    chosen = np.sort(rng.choice(len(paths), size=min(recipe.cluster_images, len(paths)), replace=False))
    model.eval()
    with torch.no_grad():
        local = [model.local_descriptors(load_image(paths[i], model.protocol)[None].to(device))[0].T.cpu().numpy()
                 for i in chosen]
    sample = np.concatenate(local)
    if sample.shape[0] > recipe.cluster_descriptors:
        sample = sample[np.sort(rng.choice(sample.shape[0], recipe.cluster_descriptors, replace=False))]
    return sample


def _miner(split: LoadedDataset, recipe: TripletRecipe, seed: int) -> PlaceMiner | None:
    gt = split.ground_truth
    if recipe.mining == "places":
        if not isinstance(gt, PlaceGroundTruth):
            raise ValueError("places mining needs a split with GPS ground truth (a dbStruct dataset)")
        miner = PlaceMiner(gt.utm_db, gt.utm_queries, n_negatives=recipe.n_negatives,
                           n_sampled_negatives=recipe.n_sampled_negatives, margin=recipe.margin, seed=seed)
        if len(miner.trainable_queries) == 0:
            raise InputError("no training tuple can be mined: no query has a potential positive and definite "
                             "negatives", split.db_paths[0].parent)
        return miner
    if not isinstance(gt, ClassLabels):
        raise ValueError("classes mining needs a split labelled by class (e.g. synth_landmarks train)")
    if np.unique(np.asarray(gt.labels), return_counts=True)[1].max(initial=0) < 2:
        raise InputError("no training tuple can be mined: no class has two images", split.db_paths[0].parent)
    return None


def _mine_round(model: Any, split: LoadedDataset, recipe: TripletRecipe, miner: PlaceMiner | None, seed: int,
                round_index: int, device: torch.device) -> list[_Tuple]:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    rng = np.random.default_rng([seed, round_index])
    if miner is not None:
        queries = round_queries(miner.trainable_queries, recipe.cache_refresh, round_index, seed)
        db = _embed(model, split.db_paths, recipe.batch_size, device, rank, world)
        q = _embed(model, [split.query_paths[i] for i in queries], recipe.batch_size, device, rank, world)
        miner.rng = rng
        picked = [miner.select(int(i), q[row], db) for row, i in enumerate(queries)]
        return [_Tuple((split.query_paths[t.query], split.db_paths[t.positive],
                        *(split.db_paths[n] for n in t.negatives))) for t in picked if t is not None]
    labels = np.asarray(split.ground_truth.labels)  # type: ignore[union-attr]
    batch = sample_mining_batch(labels, recipe.mining_classes, recipe.mining_batch, rng)
    paths = [split.db_paths[i] for i in batch]
    embedded = _embed(model, paths, recipe.batch_size, device, rank, world)
    triplets = mscfp_triplets(embedded, labels[batch], recipe.rank_threshold, rng)
    return [_Tuple((paths[a], paths[p], paths[n])) for a, p, n in triplets][:recipe.cache_refresh
                                                                             * recipe.tuples_per_batch]


def _embed(model: Any, paths: Sequence[Path], batch_size: int, device: torch.device, rank: int,
           world: int) -> np.ndarray:
    """``model.aggregate`` of ``paths`` in eval mode; under torchrun each process embeds a shard and all gather."""
    was_training = model.training
    model.eval()
    mine = extract(model.aggregate, list(paths[rank::world]), model.protocol, batch_size=batch_size, device=device)
    model.train(was_training)
    if world == 1:
        return mine
    shards: list[Any] = [None] * world
    dist.all_gather_object(shards, mine)
    out = np.empty((len(paths), mine.shape[1]), dtype=np.float32)
    for r, shard in enumerate(shards):
        out[r::world] = shard
    return out


def _step(trained: nn.Module, model: Any, batch: Sequence[_Tuple], n_in_batch: int, recipe: TripletRecipe,
          optimiser: torch.optim.Optimizer, device: torch.device) -> float:
    """One optimiser step on this process's tuples; the loss is the mean over the whole batch's tuples."""
    model.train()
    for child in model.backbone.children():
        if not any(p.requires_grad for p in child.parameters()):
            child.eval()  # frozen layers keep their batch-norm statistics
    if recipe.frozen_batchnorm:
        freeze_batchnorm(model)
    images = [load_image(path, model.protocol) for t in batch for path in t.images]
    embedded = _forward_grouped(trained, images, device)
    loss = torch.zeros((), device=device)
    offset = 0
    for t in batch:
        rows = embedded[offset:offset + len(t.images)]
        loss = loss + LOSSES[recipe.loss](rows[0], rows[1], rows[2:], recipe.margin)
        offset += len(t.images)
    world = dist.get_world_size() if dist.is_initialized() else 1
    loss = loss * world / n_in_batch  # DDP averages gradients over processes
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach()) / world


def _forward_grouped(trained: nn.Module, images: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """(N, E) embeddings of images of possibly different sizes: one forward per size, rows in input order."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(i)
    rows: list[torch.Tensor | None] = [None] * len(images)
    for members in by_shape.values():
        out = trained(torch.stack([images[i] for i in members]).to(device))
        for row, i in zip(out, members, strict=True):
            rows[i] = row
    return torch.stack([r for r in rows if r is not None])
