"""The optimisers a run can use, built from the module's hyperparameters: AdamW, SGD, Lion and Muon.

Every algorithm is a library's (torch's AdamW, SGD and Muon, timm's Lion); what is ours is which parameters
each one gets, and two conventions the stability papers ask for:

- *Independent weight decay* (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
  instabilities", sec. 3.2.2): the paper's update is theta <- theta - s_t * (eta * u + lambda * theta), with
  s_t the schedule's multiplier and eta the peak learning rate, i.e. the decay follows the schedule's shape
  but is not multiplied by eta. torch's decoupled decay applies lr_t * wd = eta * s_t * wd, so passing
  ``wd = lambda / eta`` gives exactly the paper's s_t * lambda. Only for optimisers whose decay is decoupled
  (AdamW, Lion, Muon); SGD's is an L2 term in the gradient, which its momentum would carry.
- *Muon on hidden matrices only*: torch's ``Muon`` accepts 2-D parameters only, and its documentation says
  biases, norms, embeddings (and, after Keller Jordan's write-up, the classifier head) belong to AdamW. Lightning's
  automatic optimisation steps one optimiser, so :class:`MuonWithAdamW` holds torch's two and steps both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from timm.optim import Lion
from torch import nn

OPTIMIZERS = ("adamw", "sgd", "lion", "muon")
DECOUPLED = ("adamw", "lion", "muon")  # decay applied as lr * wd * theta, outside the gradient
HEAD_PREFIX = "head."  # the classifier's parameters (VisionTransformer names them head.*)


def muon_available() -> bool:
    """Whether the installed torch provides ``torch.optim.Muon`` (torch 2.9 and later)."""
    return hasattr(torch.optim, "Muon")


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[str]]:
    """The parameters Muon takes (2-D weight matrices of the hidden layers) and the names of the others.

    The patch embedding's conv weight is 4-D, the position embedding and class token 3-D, norms and biases 1-D;
    the classifier head is 2-D but an output layer, which Muon's authors leave to AdamW.
    """
    muon, others = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim == 2 and not name.startswith(HEAD_PREFIX):
            muon.append(param)
        else:
            others.append(name)
    return muon, others


class MuonWithAdamW(torch.optim.Optimizer):
    """torch's Muon and AdamW stepped as one optimiser, over disjoint parameters.

    ``param_groups`` are the two optimisers' own group dicts (Muon's first), so the learning-rate schedule,
    ``zero_grad`` and gradient scaling reach both; ``state_dict`` holds both optimisers' states.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.parts = (muon, adamw)
        # torch's add_param_group keeps the dicts it is given (already complete with each optimiser's defaults).
        super().__init__([*muon.param_groups, *adamw.param_groups], {})

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:  # Lightning's closure: forward and backward, once for both optimisers
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for part, state in zip(self.parts, state_dict["parts"], strict=True):
            part.load_state_dict(state)


def build_optimizer(model: nn.Module, groups: list[dict[str, Any]], hp: Any) -> torch.optim.Optimizer:
    """The optimiser named by ``hp.optimizer`` over ``groups`` (the decay / no-decay parameter groups).

    ``hp`` holds the module's hyperparameters (``lr``, ``weight_decay``, ``independent_wd``, ``betas``,
    ``adam_eps``, ``momentum``). With ``independent_wd`` the decayed group's ``weight_decay`` becomes
    ``weight_decay / lr`` (see the module docstring).
    """
    if hp.independent_wd:
        groups = [{**group, "weight_decay": group["weight_decay"] / hp.lr} for group in groups]
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), eps=hp.adam_eps)
    if hp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum)
    if hp.optimizer == "lion":
        return Lion(groups, lr=hp.lr, betas=tuple(hp.betas))
    # muon: the hidden matrices to torch's Muon, with its update rescaled to AdamW's RMS ("match_rms_adamw",
    # Liu et al. 2025), so one lr and one weight decay suit both halves; everything else to AdamW.
    muon_params, _ = muon_split(model)
    in_muon = {id(p) for p in muon_params}
    decay = groups[0]["weight_decay"]
    adamw_groups = [{**group, "params": [p for p in group["params"] if id(p) not in in_muon]} for group in groups]
    muon = torch.optim.Muon(muon_params, lr=hp.lr, weight_decay=decay,  # type: ignore[attr-defined]
                            adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW([g for g in adamw_groups if g["params"]], lr=hp.lr, betas=tuple(hp.betas),
                              eps=hp.adam_eps)
    return MuonWithAdamW(muon, adamw)
