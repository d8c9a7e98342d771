"""``finetune`` mode: the last blocks are trained on cached trunk outputs of augmented views.

The frozen trunk's outputs for a few augmented views of each training image are computed once (in
memory); each epoch draws one view per image and mirrors the feature map at random, so the trained
blocks see fresh augmentations without re-running the trunk. Every fit runs the full number of epochs:
no epoch is selected, so nothing is chosen on the rows a fold predicts (the epoch count is an option).
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..cross_fitting import out_of_fold
from ..errors import ImageModelError
from ..linear_head import LinearHead
from .classifier import ImageClassifier
from .features import run_network
from .head import set_head
from .options import ImageTrainingOptions
from .transforms import View

log = logging.getLogger(__name__)


class _CachedViews(Dataset):
    """Trunk outputs of several augmented views per image; each draw picks a view and mirrors at random."""

    def __init__(self, views: list[torch.Tensor], targets: torch.Tensor, seed: int):
        self.views, self.targets, self.seed = views, targets, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        x = self.views[int(rng.integers(len(self.views)))][index].float()
        if rng.random() < 0.5:
            x = x.flip(-1)
        return x, self.targets[index]


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: DataLoader,
    device: torch.device,
    epoch: int,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """One pass over ``data_loader``; returns the mean training loss."""
    model.train()
    total, count = 0.0, 0
    for inputs, targets in tqdm(data_loader, desc=f"epoch {epoch}", leave=False, disable=None):
        inputs = inputs.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        targets = targets.to(device, non_blocking=True)
        loss = criterion(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if lr_scheduler is not None:
            lr_scheduler.step()
        total += loss.detach().item() * len(targets)
        count += len(targets)
    return total / max(count, 1)


def _train_tail(
    model: ImageClassifier,
    tail: nn.Sequential,
    trunk_views: list[torch.Tensor],
    y: np.ndarray,
    options: ImageTrainingOptions,
    device: torch.device,
) -> list[dict]:
    """Head from a logistic regression on the frozen tail's features, then tail + head trained for a fixed
    number of epochs on the given rows' cached trunk outputs; returns the training history."""
    settings = options.finetune_settings()
    epochs, lr, seed = settings["epochs"], settings["lr"], options.seed
    with torch.inference_mode():
        tail.eval()
        pooled = [
            torch.cat(
                [model.pool(tail(v[i : i + 256].float().to(device))).cpu() for i in range(0, len(v), 256)]
            ).numpy()
            for v in trunk_views
        ]
    set_head(model, LinearHead(min(options.c_grid), seed).fit(pooled, y))
    trainable = nn.Sequential(tail, model.pool, model.head)
    dataset = _CachedViews(trunk_views, torch.as_tensor(y), seed)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(
        [{"params": tail.parameters(), "lr": lr * 0.3}, {"params": model.head.parameters(), "lr": lr}],
        weight_decay=settings["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[lr * 0.3, lr], total_steps=epochs * len(loader), pct_start=0.2
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=settings["label_smoothing"])
    history = []
    for epoch in range(epochs):
        dataset.epoch = epoch
        loss = train_one_epoch(trainable, criterion, optimizer, loader, device, epoch, scheduler)
        history.append({"epoch": epoch, "train_loss": round(loss, 4)})
    trainable.eval()
    return history


def _tail_logits(
    model: ImageClassifier, tail: nn.Sequential, views: list[torch.Tensor], device: torch.device
) -> np.ndarray:
    trainable = nn.Sequential(tail, model.pool, model.head).eval()
    with torch.inference_mode():
        return (
            torch.stack(
                [
                    torch.cat([trainable(v[i : i + 256].float().to(device)).cpu() for i in range(0, len(v), 256)])
                    for v in views
                ]
            )
            .mean(0)
            .double()
            .numpy()
        )


def cross_fit_finetune(
    model: ImageClassifier,
    paths: list[str],
    y: np.ndarray,
    folds: np.ndarray,
    train_views: list[View],
    eval_views: list[View],
    info: dict,
    options: ImageTrainingOptions,
    loader_args: dict,
) -> np.ndarray:
    """Train the last ``unfreeze_blocks`` blocks + head on every row; returns out-of-fold logits.

    The frozen trunk runs once per view; each fold trains a fresh copy of the tail for a fixed number
    of epochs (no early stopping: nothing is selected on the rows a fold predicts).
    """
    settings = options.finetune_settings()
    unfreeze = settings["unfreeze_blocks"]
    if not 1 <= unfreeze < len(model.blocks):
        raise ImageModelError(f"unfreeze_blocks must be in [1, {len(model.blocks) - 1}], not {unfreeze}")
    device = loader_args["device"]
    split = len(model.blocks) - unfreeze
    trunk, tail = model.blocks[:split], model.blocks[split:]
    for p in trunk.parameters():
        p.requires_grad_(False)
    started = time.perf_counter()
    trunk_train = [
        run_network(trunk, paths, v, desc="trunk", out_dtype=torch.float16, **loader_args) for v in train_views
    ]
    trunk_eval = [
        run_network(trunk, paths, v, desc="trunk", out_dtype=torch.float16, **loader_args) for v in eval_views
    ]
    info["trunk_s"] = round(time.perf_counter() - started, 2)
    initial = copy.deepcopy(tail.state_dict())

    def fit_predict(train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        tail.load_state_dict(initial)
        _train_tail(model, tail, [v[train] for v in trunk_train], y[train], options, device)
        return _tail_logits(model, tail, [v[held_out] for v in trunk_eval], device)

    oof = out_of_fold(fit_predict, folds, len(model.head.bias))
    tail.load_state_dict(initial)
    info["history"] = _train_tail(model, tail, trunk_train, y, options, device)
    for p in model.parameters():
        p.requires_grad_(True)
    info.update({"unfreeze_blocks": unfreeze, "epochs": settings["epochs"], "lr": settings["lr"]})
    return oof
