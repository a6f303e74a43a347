"""``python -m benchmarks train``: a method trained with its recipe from its initialisation."""
from __future__ import annotations

from pathlib import Path

import click

from benchmarks.commands.options import ROOT, dataset_spec, device_for


@click.command("train")
@click.argument("method")
@click.option("--dataset", required=True, help="A dataset with a training split (synth_places, pitts30k, ...).")
@click.option("--split", default="train", show_default=True)
@click.option("--val-split", default=None,
              help="Validate after each epoch on this split (recall@5) and keep the best epoch's weights, as NetVLAD.")
@click.option("--steps", type=click.IntRange(min=0), required=True,
              help="Optimiser steps (0: only the initialisation and the fitted parts, an untrained baseline).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--config", "config_pairs", multiple=True, metavar="FIELD=VALUE",
              help="Override a field of the method's Config (backbone=resnet18, num_clusters=16). Repeatable.")
@click.option("--set", "recipe_pairs", multiple=True, metavar="FIELD=VALUE",
              help="Override a field of the method's training recipe (lr=0.01, cache_refresh=50). Repeatable.")
@click.option("--protocol", "protocol_pairs", multiple=True, metavar="FIELD=VALUE",
              help="Override a field of the method's test protocol (max_size=128), kept in the checkpoint and "
                   "recorded in every result made from it. Repeatable.")
@click.option("--name", required=True, help="Weights name, arch.tag (resnet18.synth_places).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Checkpoint to write.")
@click.option("--init", default=None, metavar="NAME|PATH|none",
              help="The trunk's initialisation (default: the recipe's, e.g. ImageNet VGG-16 for NetVLAD; "
                   "efficientnet_lite0.in1k works offline; none: timm's random trunk).")
@click.option("--mirror", "mirrors", multiple=True, metavar="URL_PREFIX", help="Tried first for the initialisation.")
@ROOT
@click.option("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present).")
def train_command(method: str, dataset: str, split: str, val_split: str | None, steps: int, seed: int,
                  config_pairs: tuple[str, ...], recipe_pairs: tuple[str, ...], protocol_pairs: tuple[str, ...],
                  name: str, out: Path, init: str | None, mirrors: tuple[str, ...], root: Path | None,
                  device: str | None) -> None:
    """Train METHOD on a dataset's training split from its recipe's initialisation; resumable (OUT.state), runs
    under torchrun as well."""
    import dataclasses

    from benchmarks.core.acquire import AcquireOptions
    from benchmarks.core.data_root import data_root
    from benchmarks.core.ids import WEIGHTS_NAME_PATTERN
    from benchmarks.training.common import TrainOptions, init_distributed
    from benchmarks.training.dispatch import train_model
    from benchmarks.training.initialise import settle
    from methods import load_plugins
    from methods.base import parse_overrides, protocol_with
    from methods.initialisation import load_initialisation
    from methods.weights import save_checkpoint

    cls = load_plugins().get(method)
    default_recipe = getattr(cls, "recipe", None)
    if default_recipe is None:
        raise click.UsageError(f"{method} has no training recipe in this suite")
    if not WEIGHTS_NAME_PATTERN.match(name):
        raise click.BadParameter(f"{name!r} is not 'arch.tag' in lowercase (e.g. resnet18.synth_places)",
                                 param_hint="--name")
    try:
        overrides = parse_overrides(cls.config_class, config_pairs)
        recipe_overrides = parse_overrides(type(default_recipe), recipe_pairs)
        dataclasses.replace(default_recipe, **recipe_overrides)
        protocol_with(cls.protocol, protocol_pairs)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    import torch

    spec, folder_root = dataset_spec(dataset), data_root(root)
    start = settle(cls, init, overrides, folder_root, AcquireOptions(mirrors=mirrors))
    try:
        config = cls.config_class(**start.config_values)
    except (TypeError, ValueError) as error:
        raise click.BadParameter(str(error), param_hint="--config") from None
    recipe = dataclasses.replace(default_recipe, **{**cls.recipe_for_trunk(config.backbone), **recipe_overrides})
    torch.manual_seed(seed)  # the random initialisation of whatever the method does not load or fit
    model = cls(config)
    if start.initialisation is not None:
        load_initialisation(model, start.initialisation)
    model.protocol = protocol_with(model.protocol, protocol_pairs)
    state = Path(f"{out}.state")
    validation = None if val_split is None else spec.load(folder_root, val_split)
    report = train_model(model, spec.load(folder_root, split), recipe,
                         TrainOptions(steps=steps, seed=seed, device=device_for(device), state=state,
                                      validation=validation))
    if init_distributed()[0] != 0:
        return
    digest = save_checkpoint(out, model.cpu(), name, {
        "trained_on": {"dataset": dataset, "split": split}, "recipe": dataclasses.asdict(recipe),
        "trunk_initialisation": start.record(), **report})
    state.unlink(missing_ok=True)
    click.echo(f"{out}: {method} {name}, sha256 {digest}")
