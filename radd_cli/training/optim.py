"""The optimizer and the learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch

from radd_cli.validation import Choice


class LRSchedule(Choice):
    """What the learning rate does after the linear warm-up."""

    constant = "constant"
    cosine = "cosine"  # half a cosine down to min_lr_ratio · lr at the last step
    linear = "linear"  # a straight line down to min_lr_ratio · lr at the last step


def learning_rate_factor(training, step: int) -> float:
    """The multiple of training.lr at `step`: linear warm-up, then constant, cosine or linear decay."""
    if training.warmup_steps and step < training.warmup_steps:
        return (step + 1) / training.warmup_steps
    if training.lr_schedule == LRSchedule.constant:
        return 1.0
    span = max(1, training.steps - training.warmup_steps)
    progress = min(1.0, (step - training.warmup_steps) / span)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if training.lr_schedule == LRSchedule.cosine else 1 - progress
    return training.min_lr_ratio + (1 - training.min_lr_ratio) * shape


def build_optimizer(model: torch.nn.Module, training, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with the recipe's settings (fused on GPUs) over the weights that train (with LoRA, the adapters)."""
    return torch.optim.AdamW(
        trained_parameters(model),
        lr=training.lr,
        betas=(training.beta1, training.beta2),
        eps=training.adam_eps,
        weight_decay=training.weight_decay,
        fused=device.type == "cuda",
    )


def build_scheduler(optimizer: torch.optim.Optimizer, training) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(training, step))


def trained_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters that get gradients, in the model's order: all of them, or LoRA's adapters alone."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
