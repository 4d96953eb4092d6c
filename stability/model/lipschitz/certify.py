"""Certified robustness from a bound: LipShiFT's certificates, its margin-training loss, and its radii.

- :func:`certified_mask`: certified robust accuracy at an l2 radius, head-aware (LipShiFT's pairwise
  certificate, from the backbone bound and :func:`pairwise_distances` of the head rows);
  :func:`certified_mask_sqrt2`: the plain sqrt(2) * L form, from the network bound;
- :func:`emma_logits`: the margin-training loss's logits; :func:`margin_radius`: its radius schedule.

Radii are l2 in [0, 1] pixel space (:mod:`stability.model.lipschitz.pixels`).
"""

from __future__ import annotations

import math

import torch

DEFAULT_RADIUS = 36 / 255  # LipShiFT's evaluation radius, l2 in [0, 1] pixel space
DEFAULT_RADII = (0.0, 18 / 255, 36 / 255, 72 / 255, 108 / 255)


def pairwise_distances(head_weight: torch.Tensor) -> torch.Tensor:
    """(K, K): ||w_i - w_j|| between head rows, with a zero diagonal and finite gradients everywhere."""
    diff = head_weight[:, None, :] - head_weight[None, :, :]  # (K, K, D)
    squared = diff.square().sum(-1)
    eye = torch.eye(head_weight.shape[0], dtype=torch.bool, device=head_weight.device)
    return torch.where(eye, torch.zeros_like(squared), squared.clamp_min(1e-24).sqrt())


def certified_mask(logits: torch.Tensor, labels: torch.Tensor, backbone: float | None,
                   head_weight: torch.Tensor, radius: float) -> torch.Tensor:
    """(B,) bool: correct and certified at l2 ``radius`` with LipShiFT's head-aware certificate.

    With L the backbone bound (pixels -> head input) and w_i the head rows, the margin f_y - f_i moves by at
    most L ||w_y - w_i|| per unit of input change, so the prediction y cannot change within the radius when
    f_y - f_i > radius * L * ||w_y - w_i|| for every i != y (LipShiFT ``trades_loss``; GloRo, Leino et al.
    2021). No bound: nothing is certified at a radius > 0. At radius 0 this is plain accuracy.
    """
    correct = logits.argmax(dim=1) == labels
    if radius == 0:
        need = torch.zeros_like(logits)
    elif backbone is None or not math.isfinite(backbone):
        return torch.zeros_like(correct)
    else:
        need = radius * backbone * pairwise_distances(head_weight.to(logits))[labels]  # (B, K)
    gap = logits.gather(1, labels[:, None]) - logits  # (B, K): f_y - f_i
    ok = gap > need
    ok[torch.arange(len(labels), device=labels.device), labels] = True
    return correct & ok.all(dim=1)


def certified_mask_sqrt2(logits: torch.Tensor, labels: torch.Tensor, network: float | None,
                         radius: float) -> torch.Tensor:
    """(B,) bool: the plain certificate f_y - max_{i != y} f_i > sqrt(2) L radius, with L the bound of the
    whole network (pixels -> logits): ||e_y - e_i|| = sqrt(2). Looser than :func:`certified_mask`."""
    correct = logits.argmax(dim=1) == labels
    if radius == 0:
        need = 0.0
    elif network is None or not math.isfinite(network):
        return torch.zeros_like(correct)
    else:
        need = math.sqrt(2.0) * network * radius
    others = logits.scatter(1, labels[:, None], float("-inf"))
    gap = logits.gather(1, labels[:, None])[:, 0] - others.max(dim=1).values
    return correct & (gap > need)


def emma_logits(logits: torch.Tensor, labels: torch.Tensor, backbone: torch.Tensor, head_weight: torch.Tensor,
                radius: float) -> torch.Tensor:
    """Logits of LipShiFT's margin-training loss (EMMA, Hu et al. 2023, "Unlocking deterministic robustness
    certification on ImageNet", Sec. 4; LipShiFT ``emma_loss``): every wrong class's logit raised by

        eps_yi * radius * L * ||w_y - w_i||,   eps_yi = clip((f_y - f_i) / (radius L ||w_y - w_i||), 0.01, 1)

    with eps_yi held constant (stop-gradient): an adaptive per-class radius, never more than the margin that
    class still lacks. ``backbone`` (L) and ``head_weight`` carry gradients, so the loss also pushes the
    bound down. Cross-entropy on these logits is plain cross-entropy at radius 0.
    """
    if radius == 0:
        return logits
    cap = radius * backbone * pairwise_distances(head_weight)[labels]  # (B, K), 0 at the true class
    gap = (logits.gather(1, labels[:, None]) - logits).detach()  # (B, K): f_y - f_i
    fraction = (gap / cap.detach().clamp_min(1e-12)).clamp(0.01, 1.0)
    return logits + fraction * cap


def margin_radius(base: float, ramp: tuple[float, float], progress: float) -> float:
    """LipShiFT's training radius at a fraction ``progress`` of training: base * (start + (end - start) *
    min(1.5 progress, 1)) (CIFAR-10: from 1x to 2x the evaluation radius over the first two thirds; LipShiFT
    steps it per epoch, this per optimiser step)."""
    start, end = ramp
    return base * (start + (end - start) * min(1.5 * max(progress, 0.0), 1.0))
