"""FLOP count of one forward pass, per image, with PyTorch's own counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the CUDA attention kernels but not the CPU one; without these entries the
# attention matmuls would count as zero on the CPU.
CPU_SDPA_FLOPS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def count_flops(model: nn.Module, batch: int = 1) -> int:
    """FLOPs (multiply-add = 2) of one forward pass per image, counted by ``torch.utils.flop_counter``
    on a batch of zeros shaped like ``model.cfg``'s input. Matmuls, convs and attention only: norms and
    activations are not counted (as usual)."""
    cfg = model.cfg
    param = next(model.parameters())
    images = torch.zeros(batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=param.device,
                         dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
            model(images)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // batch
