"""Fine-tuning the transformer text model (training only: torch and transformers)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..categories import CATEGORY_CODES, label_indices
from .text_transformer import TransformerParams, TransformerTextModel


def fine_tune_transformer(
    texts: Sequence[str], labels: Sequence[int], params: TransformerParams
) -> TransformerTextModel:
    """Fine-tune `params.backbone` (all layers) with AdamW and linear warm-up/decay (temperature 1)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(params.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    texts, label_idx = list(texts), label_indices(labels)
    if params.sample_fraction < 1.0:
        rng = np.random.default_rng(params.seed)
        keep = rng.random(len(texts)) < params.sample_fraction
        texts, label_idx = [t for t, k in zip(texts, keep, strict=True) if k], label_idx[keep]
    if not texts:
        raise ValueError("no training texts left after sampling")
    tokenizer = AutoTokenizer.from_pretrained(params.backbone)
    model = AutoModelForSequenceClassification.from_pretrained(
        params.backbone,
        num_labels=len(CATEGORY_CODES),
        id2label={i: str(c) for i, c in enumerate(CATEGORY_CODES)},
        label2id={str(c): i for i, c in enumerate(CATEGORY_CODES)},
        ignore_mismatched_sizes=True,
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    steps_per_epoch = math.ceil(len(texts) / params.batch_size)
    total_steps = max(1, int(steps_per_epoch * params.epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total_steps), total_steps)
    generator = np.random.default_rng(params.seed)
    model.train()
    progress = tqdm(total=total_steps, desc="fine-tuning text transformer", unit="step", disable=None)
    step = 0
    while step < total_steps:
        order = generator.permutation(len(texts))
        for start in range(0, len(order), params.batch_size):
            if step >= total_steps:
                break
            batch = order[start : start + params.batch_size]
            encoded = tokenizer(
                [texts[i] for i in batch],
                truncation=True,
                max_length=params.max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            output = model(**encoded, labels=torch.as_tensor(label_idx[batch], device=device))
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{output.loss.item():.3f}")
    progress.close()
    return TransformerTextModel(model, tokenizer, 1.0, params)
