"""scikit-learn's digits: the embedded default data set, kept as tensors and served whole batches at a time."""

import numpy as np
import torch

from stability.data.loading import TensorDataModule, check_common, check_fraction, require, split_sizes
from stability.data.samplers import (
    TensorBatchDataset,
    stratified_order,
)


class DigitsDataModule(TensorDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 grayscale 8x8 images of 10 classes.

    The embedded default: nothing to download, and small enough to keep as tensors in memory and to serve
    whole batches by one tensor gather (see :class:`TensorBatchDataset`), which makes an epoch cost
    about a millisecond. Pixels (0..16) are scaled to [0, 1] and, with ``normalize``, standardised with
    the training split's mean and std (a single channel, so two scalars).

    Args:
        batch_size: Images per batch (per device under DDP).
        val_fraction: Fraction of all 1,797 images held out for validation.
        test_fraction: Fraction of all 1,797 images held out for the test.
        seed: Seeds the stratified train/val/test split and (with the global seed) the shuffle order.
        normalize: Standardise pixels with the training split's mean and std (else keep them in [0, 1]).
    """

    num_classes: int = 10
    img_size: int = 8
    in_chans: int = 1

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.1, test_fraction: float = 0.2,
                 seed: int = 0, normalize: bool = True) -> None:
        super().__init__()
        check_common(batch_size, seed)
        check_fraction("val_fraction", val_fraction)
        check_fraction("test_fraction", test_fraction)
        held_out = val_fraction + test_fraction
        require(held_out < 1.0, "val_fraction + data.test_fraction", held_out,
                "the held-out fractions must sum to less than 1 to leave training images")
        self.save_hyperparameters()
        self.batch_size, self.seed, self.normalize = batch_size, seed, normalize
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.mean, self.std = 0.0, 1.0
        self.splits: dict[str, TensorBatchDataset] = {}
        self.split_indices: dict[str, np.ndarray] = {}  # indices into load_digits()'s 1,797 rows

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return  # the whole data set is built once, whatever the stage
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        labels = torch.as_tensor(digits.target, dtype=torch.int64)  # (N,)
        sizes = split_sizes(len(labels), {"test_fraction": self.test_fraction,
                                          "val_fraction": self.val_fraction})
        order = stratified_order(digits.target, self.seed)
        n_test, n_val = sizes["test_fraction"], sizes["val_fraction"]
        self.split_indices = {
            "test": np.sort(order[:n_test]),
            "val": np.sort(order[n_test:n_test + n_val]),
            "train": np.sort(order[n_test + n_val:]),
        }
        if self.normalize:
            train = images[self.split_indices["train"]]
            self.mean, self.std = train.mean().item(), train.std().item()
            images = (images - self.mean) / self.std
        self.splits = {name: TensorBatchDataset(images[idx], labels[idx])
                       for name, idx in self.split_indices.items()}
