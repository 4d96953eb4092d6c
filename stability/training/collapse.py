"""Quiet failure: a run that trains to the end but learns nothing is *collapsed*, not a success.

Divergence (a non-finite or exploding loss) stops a run loudly. At high learning rates a ViT more often fails
quietly: its loss sits at ln(num_classes), the loss of the uniform prediction, its accuracy at chance, while
its attention logits grow; recorded as ``completed`` it would look stable. The rule, applied to every run
that completes (and used by every table through its status):

    collapsed  <=>  mean training loss of the last epoch >= LOSS_FRACTION x the initial loss
               or   final validation accuracy < CHANCE_FACTOR x chance (1 / num_classes)

The initial loss is the first step's (about ln(num_classes) for a freshly initialised classifier). A slow
learner (loss clearly below its start, accuracy above chance) is not collapsed; one whose loss never left the
uniform prediction's, or whose predictions are no better than guessing, is. Label smoothing raises the loss
floor only to a fraction of ln(num_classes), far below LOSS_FRACTION of it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LOSS_FRACTION = 0.9
CHANCE_FACTOR = 1.5


def collapse_reason(train_loss_history: Sequence[float] | None, initial_loss: float | None,
                    final_val_acc: float | None, num_classes: int) -> str | None:
    """Why a completed run counts as collapsed, or None when it learned."""
    last = train_loss_history[-1] if train_loss_history else None
    if last is not None and initial_loss is not None and math.isfinite(initial_loss) and initial_loss > 0:
        if not math.isfinite(last) or last >= LOSS_FRACTION * initial_loss:
            return (f"last epoch's mean training loss {last:.3f} is still >= {LOSS_FRACTION:g} x the initial loss "
                    f"{initial_loss:.3f} (the uniform prediction's is ln {num_classes} = {math.log(num_classes):.3f})")
    chance = 1.0 / num_classes
    if final_val_acc is not None and math.isfinite(final_val_acc) and final_val_acc < CHANCE_FACTOR * chance:
        return f"final validation accuracy {final_val_acc:.3f} is below {CHANCE_FACTOR:g} x chance ({chance:.3f})"
    return None
