"""The compact-transformer augmentation of the CIFAR modules: RandAugment and random erasing per image, mixup
and cutmix per batch (all timm's), on fabricated CIFAR-10 files in the real pickle format."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sweep_helpers import BASE, TRAINED, fabricate_cifar10
from torchvision.transforms import v2

from stability.data import CIFAR10DataModule
from stability.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from stability.errors import ConfigError
from stability.record.config_files import load_config_files
from stability.training import run as train

RECIPE = {"randaugment": "rand-m9-mstd0.5-inc1", "random_erasing": 0.25, "mixup": 0.8, "cutmix": 1.0}


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fabricate_cifar10(tmp_path_factory.mktemp("cifar"), per_file=8)  # 40 training, 8 test images


def module(folder: Path, **options: object) -> CIFAR10DataModule:
    dm = CIFAR10DataModule(str(folder), batch_size=8, num_workers=0, allow_unverified=True, **options)
    dm.setup("fit")
    return dm


def trainer_in(stage: str) -> L.Trainer:
    """A real Trainer put in the training or the validation loop's state, as Lightning sets it."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    setattr(trainer, stage, True)
    return trainer


def first_batch(dm: CIFAR10DataModule, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return next(iter(loader))


def test_training_batches_are_augmented_and_mixed_into_soft_targets(cifar_dir: Path) -> None:
    dm = module(cifar_dir, **RECIPE)
    assert dm.soft_targets
    images, labels = first_batch(dm)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    dm.trainer = trainer_in("training")
    mixed, targets = dm.on_after_batch_transfer((images, labels), 0)
    assert mixed.shape == (8, 3, 32, 32) and mixed.dtype == torch.float32
    assert targets.shape == (8, 10) and targets.dtype == torch.float32
    assert torch.allclose(targets.sum(dim=1), torch.ones(8)) and bool((targets >= 0).all())
    # one lambda for the batch: each target is lam * own label + (1 - lam) * the label of the image paired
    # with it (timm pairs i with B-1-i); the model's label smoothing comes later, none here
    one_hot = F.one_hot(labels, 10).float()
    i = int(torch.nonzero(labels != labels.flip(0))[0])
    lam = float(targets[i, labels[i]])
    assert 0.0 < lam < 1.0
    assert torch.allclose(targets, lam * one_hot + (1 - lam) * one_hot.flip(0), atol=1e-6)
    # the images by the same lambda: blended (mixup), or a box pasted from the paired image (cutmix)
    blended = torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0), atol=1e-5)
    pasted = bool(((mixed == images) | (mixed == images.flip(0))).all()) and not torch.equal(mixed, images)
    assert blended or pasted


def test_mixing_leaves_the_loaders_batch_alone(cifar_dir: Path) -> None:
    dm = module(cifar_dir, mixup=0.8)
    images, labels = first_batch(dm)
    kept = images.clone()
    dm.mix((images, labels))
    assert torch.equal(images, kept)


def test_validation_batches_are_never_augmented(cifar_dir: Path) -> None:
    """The validation split is the normalised pixels of the held-out files, whatever the training split gets,
    and the mixing hook passes its batches through unchanged."""
    dm = module(cifar_dir, **RECIPE)
    images, labels = first_batch(dm, "val")
    plain = module(cifar_dir, augment=False)
    expected_images, expected_labels = first_batch(plain, "val")
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    # ... and they are the file's pixels, normalised (the first held-out image, read straight from its file)
    index = dm.datasets["val"].indices[0]
    rows = [pickle.loads((cifar_dir / "cifar-10-batches-py" / f"data_batch_{i}").read_bytes(), encoding="latin1")
            for i in range(1, 6)]
    pixels = np.concatenate([r["data"] for r in rows])[index].reshape(3, 32, 32) / 255.0
    mean, std = torch.tensor(CIFAR10_MEAN).view(3, 1, 1), torch.tensor(CIFAR10_STD).view(3, 1, 1)
    assert torch.allclose(images[0], (torch.tensor(pixels, dtype=torch.float32) - mean) / std, atol=1e-6)
    dm.trainer = trainer_in("validating")
    out_images, out_labels = dm.on_after_batch_transfer((images, labels), 0)
    assert out_images is images and out_labels is labels


def test_augmentation_is_deterministic_for_a_fixed_seed(cifar_dir: Path) -> None:
    def draw(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        L.seed_everything(seed, verbose=False)
        dm = module(cifar_dir, **RECIPE)
        return dm.mix(first_batch(dm))

    first, again, other = draw(3), draw(3), draw(4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_randaugment_and_erasing_change_the_training_images_only(cifar_dir: Path) -> None:
    """Without crop and flip, a training image differs from its plain version only through RandAugment and
    random erasing; the validation split stays the plain one."""
    L.seed_everything(0, verbose=False)
    plain = module(cifar_dir, augment=False)
    randaugmented = module(cifar_dir, augment=False, randaugment="rand-m9-mstd0.5-inc1")
    erased = module(cifar_dir, augment=False, random_erasing=1.0)
    n = len(plain.datasets["train"])
    originals = [plain.datasets["train"][i][0] for i in range(n)]
    assert all(torch.equal(originals[i], module(cifar_dir, augment=False).datasets["train"][i][0])
               for i in range(n))  # nothing random without augmentation
    # two ops of magnitude ~9, each applied with probability 0.5: most images change
    assert sum(not torch.equal(originals[i], randaugmented.datasets["train"][i][0]) for i in range(n)) > n // 2
    for i in range(n):  # erasing with probability 1: one rectangle of every image is noise, the rest kept
        image = erased.datasets["train"][i][0]
        same = (image == originals[i]).all(dim=0)
        assert 0 < int((~same).sum()) < 32 * 32
    for dm in (randaugmented, erased):
        assert all(torch.equal(dm.datasets["val"][i][0], plain.datasets["val"][i][0])
                   for i in range(len(plain.datasets["val"])))


def test_default_pipeline_is_the_crop_and_flip_it_was(cifar_dir: Path) -> None:
    """The new options off: training images are exactly what the crop + flip pipeline gave before them."""
    dm = module(cifar_dir)
    assert not dm.soft_targets
    before = v2.Compose([v2.ToImage(), v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                         v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR10_MEAN, CIFAR10_STD),
                         v2.ToPureTensor()])
    train = dm.datasets["train"]
    for i in range(len(train)):
        image, _ = train.base[train.indices[i]]
        assert isinstance(image, Image.Image)
        torch.manual_seed(i)
        now = train[i][0]
        torch.manual_seed(i)
        assert torch.equal(now, before(image))


def test_mixing_stops_at_mixup_off_epoch(cifar_dir: Path) -> None:
    dm = module(cifar_dir, mixup=0.8, cutmix=1.0, mixup_off_epoch=2)
    batch = first_batch(dm)
    dm.trainer = trainer_in("training")
    shapes = []
    for epoch in (0, 1, 2, 3):
        dm.trainer.fit_loop.epoch_progress.current.completed = epoch  # what trainer.current_epoch reads
        assert dm.trainer.current_epoch == epoch
        shapes.append(tuple(dm.on_after_batch_transfer(batch, 0)[1].shape))
    assert shapes == [(8, 10), (8, 10), (8,), (8,)]  # from epoch 2 on: class indices, the images as loaded


def test_an_odd_batch_mixes_all_but_its_last_image(cifar_dir: Path) -> None:
    dm = module(cifar_dir, cutmix=1.0)
    images, labels = first_batch(dm)
    mixed, targets = dm.mix((images[:5], labels[:5]))
    assert targets.shape == (5, 10) and torch.equal(mixed[4], images[4])
    assert torch.equal(targets[4], F.one_hot(labels[4], 10).float())


@pytest.mark.parametrize(("options", "key"), [
    ({"randaugment": "rand-m9-bogus3"}, "data.randaugment"),
    ({"randaugment": "augmix-m5"}, "data.randaugment"),
    ({"randaugment": "rand-zz"}, "data.randaugment"),  # timm would skip the section silently
    ({"random_erasing": 1.5}, "data.random_erasing"),
    ({"mixup": -0.1}, "data.mixup"),
    ({"cutmix": math.nan}, "data.cutmix"),
    ({"mixup_off_epoch": -1}, "data.mixup_off_epoch"),
    ({"mixup": 0.8, "batch_size": 7}, "data.batch_size"),
])
def test_bad_augmentation_keys_are_one_line_errors(cifar_dir: Path, options: dict, key: str) -> None:
    kwargs = {"batch_size": 8, **options}
    with pytest.raises(ConfigError) as err:
        CIFAR10DataModule(str(cifar_dir), num_workers=0, allow_unverified=True, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{key}: ") and "\n" not in message


class RecordingCIFAR10(CIFAR10DataModule):
    """The real module, noting what each batch's targets look like after the mixing hook, and in which loop."""

    seen: list[tuple[str, tuple[int, ...]]] = []

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor],
                                dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = super().on_after_batch_transfer(batch, dataloader_idx)
        self.seen.append(("train" if self.trainer.training else "eval", tuple(batch[1].shape)))
        return batch


def test_a_tiny_fit_with_the_recipe_writes_a_finite_loss(cifar_dir: Path, tmp_path: Path) -> None:
    config = load_config_files([BASE])  # the shipped digits base config, pointed at CIFAR and shrunk
    config["model"]["vit"].update(img_size=32, patch_size=8, in_chans=3, embed_dim=16, depth=2, num_heads=2)
    config["model"]["label_smoothing"] = 0.1
    config["data"] = {"class_path": f"{__name__}.RecordingCIFAR10",
                      "init_args": {"data_dir": str(cifar_dir), "batch_size": 8, "num_workers": 0,
                                    "allow_unverified": True, **RECIPE}}
    config["trainer"].update(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1,
                             enable_progress_bar=False)
    RecordingCIFAR10.seen.clear()
    summary = train.run(config, tmp_path / "run")
    # the two training steps trained on soft targets; validation and test saw class indices
    assert [shape for loop, shape in RecordingCIFAR10.seen if loop == "train"] == [(8, 10), (8, 10)]
    evaluated = {shape for loop, shape in RecordingCIFAR10.seen if loop == "eval"}
    assert evaluated and evaluated <= {(4,), (8,)}
    assert summary.status in TRAINED and summary.steps == 2
    assert math.isfinite(summary.initial_loss) and math.isfinite(summary.final_train_loss)
    assert summary.initial_loss == pytest.approx(math.log(10), abs=0.7)  # soft targets: ~ln(10) at init too
    assert summary.final_val_acc is not None and 0.0 <= summary.final_val_acc <= 1.0
