"""One entry to training: the loop is chosen by the type of the method's recipe."""
from __future__ import annotations

from typing import Any

from benchmarks.training.classification import train_classification
from benchmarks.training.common import TrainOptions
from benchmarks.training.triplet import train
from datasets.base import LoadedDataset
from methods.recipes import ClassificationRecipe, TripletRecipe


def train_model(model: Any, split: LoadedDataset, recipe: Any, options: TrainOptions) -> dict[str, Any]:
    """Train ``model`` in place with the loop its recipe belongs to; returns what the run did."""
    if isinstance(recipe, TripletRecipe):
        return train(model, split, recipe, options)
    if isinstance(recipe, ClassificationRecipe):
        if options.validation is not None:
            raise ValueError("best-epoch selection on a validation split exists for the triplet loop only")
        return train_classification(model, split, recipe, options)
    raise TypeError(f"no training loop for a recipe of type {type(recipe).__name__}")
