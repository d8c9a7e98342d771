"""``finetune`` mode: the last blocks are trained on cached trunk outputs of augmented views.

The frozen trunk's outputs for a few augmented views of each training image are computed once (in
memory); each epoch draws one view per image and mirrors the feature map at random, so the trained
blocks see fresh augmentations without re-running the trunk. The best epoch on validation is kept.
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

from ..errors import ImageModelError
from .classifier import ImageClassifier
from .features import run_network
from .head import metrics, set_head_from_logistic
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


def finetune(
    model: ImageClassifier,
    train_paths: list[str],
    y_train: np.ndarray,
    val_paths: list[str],
    y_val: np.ndarray,
    train_views: list[View],
    val_views: list[View],
    info: dict,
    options: ImageTrainingOptions,
    loader_args: dict,
) -> torch.Tensor:
    """Train the last ``unfreeze_blocks`` blocks + head on cached trunk outputs; keep the best validation epoch."""
    settings = options.finetune_settings()
    epochs, lr, unfreeze, seed = settings["epochs"], settings["lr"], settings["unfreeze_blocks"], options.seed
    if not 1 <= unfreeze < len(model.blocks):
        raise ImageModelError(f"unfreeze_blocks must be in [1, {len(model.blocks) - 1}], not {unfreeze}")
    device = loader_args["device"]
    split = len(model.blocks) - unfreeze
    trunk, tail = model.blocks[:split], model.blocks[split:]
    for p in trunk.parameters():
        p.requires_grad_(False)
    started = time.perf_counter()
    tr = [run_network(trunk, train_paths, v, desc="trunk", out_dtype=torch.float16, **loader_args) for v in train_views]
    va = [run_network(trunk, val_paths, v, desc="trunk", out_dtype=torch.float16, **loader_args) for v in val_views]
    info["trunk_s"] = round(time.perf_counter() - started, 2)

    # Start the head from a logistic regression on the frozen tail's features: training then only refines.
    with torch.inference_mode():
        tail.eval()
        pooled_tr = [model.pool(tail(v.float().to(device))).cpu().numpy() for v in tr]
        pooled_va = [model.pool(tail(v.float().to(device))).cpu().numpy() for v in va]
    set_head_from_logistic(model, pooled_tr, y_train, pooled_va, y_val, options.c_grid, seed, info)

    trainable = nn.Sequential(tail, model.pool, model.head)
    dataset = _CachedViews(tr, torch.as_tensor(y_train), seed)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(
        [{"params": tail.parameters(), "lr": lr * 0.3}, {"params": model.head.parameters(), "lr": lr}],
        weight_decay=settings["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[lr * 0.3, lr], total_steps=epochs * len(loader), pct_start=0.2
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=settings["label_smoothing"])

    def val_logits() -> torch.Tensor:
        trainable.eval()
        with torch.inference_mode():
            return torch.stack(
                [
                    torch.cat([trainable(v[i : i + 256].float().to(device)).cpu() for i in range(0, len(v), 256)])
                    for v in va
                ]
            ).mean(0)

    best_logits = val_logits()
    best = (metrics(best_logits, y_val)["log_loss"], -1, copy.deepcopy(trainable.state_dict()))
    history = []
    for epoch in range(epochs):
        dataset.epoch = epoch
        loss = train_one_epoch(trainable, criterion, optimizer, loader, device, epoch, scheduler)
        logits = val_logits()
        scores = metrics(logits, y_val)
        history.append(
            {"epoch": epoch, "train_loss": round(loss, 4), **{k: round(v, 4) for k, v in scores.items() if k != "n"}}
        )
        log.info(
            "epoch %d: train loss %.3f, val weighted F1 %.3f, val log-loss %.3f",
            epoch,
            loss,
            scores["f1_weighted"],
            scores["log_loss"],
        )
        if scores["log_loss"] < best[0]:
            best = (scores["log_loss"], epoch, copy.deepcopy(trainable.state_dict()))
            best_logits = logits
    trainable.load_state_dict(best[2])
    for p in model.parameters():
        p.requires_grad_(True)
    info.update({"best_epoch": best[1], "history": history, "unfreeze_blocks": unfreeze, "epochs": epochs, "lr": lr})
    return best_logits
