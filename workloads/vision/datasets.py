"""Image sets: scikit-learn's bundled digits, or a folder of PGM/PPM images per class, cut
into a long-tailed training set and a balanced held-out set (`build_data`).

- `digits`: `sklearn.datasets.load_digits`, 1,797 8x8 grey images of the digits 0-9 (about
  180 each), shipped inside scikit-learn (no download). Class c is the digit c.
- `image-folder`: `<path>/<class name>/*.pgm|ppm|pnm` (`pnm.py`); classes are the folders
  sorted by name. Every image is resized to the model's input size; grey images become three
  channels when any image of the set is in colour. PNG and JPEG are refused with a message:
  no image library is a dependency.

Pixels are floats in [0, 1]; `normalize` standardizes them by the training set's own mean
and deviation per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from carina.workloads.config import ExitCode, VisionDataSource, VisionDataSpec
from carina.workloads.errors import WorkerError
from carina.workloads.vision.longtail import (
    NotEnoughImages,
    Split,
    class_groups,
    longtail_counts,
    split_indices,
)
from carina.workloads.vision.pnm import PnmError, read_pnm

PNM_SUFFIXES = frozenset({".pgm", ".ppm", ".pnm"})
UNSUPPORTED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif"})


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, H, W) in [0, 1] and their labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: list[int]) -> ImageSet:
        idx = torch.tensor(indices, dtype=torch.long)
        return ImageSet(self.images[idx], self.labels[idx], self.class_names)


@dataclass(frozen=True)
class LongTailedData:
    """The training and held-out sets of one data spec, and the profile that cut them."""

    train: ImageSet
    test: ImageSet
    counts: list[int]  # training images per class
    mean: torch.Tensor  # (C,) per-channel mean of the training images
    std: torch.Tensor  # (C,)

    @property
    def groups(self) -> dict[str, list[int]]:
        """Head, medium and tail classes (thirds by training count)."""
        return class_groups(self.counts)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel, for a batch (B, C, H, W) on any device."""
        mean = self.mean.to(images.device).view(1, -1, 1, 1)
        std = self.std.to(images.device).view(1, -1, 1, 1)
        return (images - mean) / std


def load_digits() -> ImageSet:
    """scikit-learn's digits as (1797, 1, 8, 8) images in [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.long)
    return ImageSet(images, labels, tuple(str(d) for d in range(10)))


def _resize(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, C) array to a (C, size, size) tensor (area-averaged when shrinking)."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (C, H, W)
    if t.shape[1:] == (size, size):
        return t
    mode = "area" if min(t.shape[1:]) > size else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(t[None], size=(size, size), mode=mode, **kwargs)[0].clamp(0, 1)


def load_image_folder(root: str | Path, size: int) -> ImageSet:
    """`root/<class name>/*.pgm|ppm|pnm`, resized to size x size; BAD_DATA or NO_INPUT when
    it cannot be read."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise WorkerError(ExitCode.NO_INPUT, f"data.path {root}: no such folder")
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise WorkerError(ExitCode.BAD_DATA, f"data.path {root}: needs a folder per class (2+)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for c, folder in enumerate(folders):
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        found = 0
        for f in files:
            suffix = f.suffix.lower()
            if suffix in UNSUPPORTED_SUFFIXES:
                raise WorkerError(
                    ExitCode.BAD_DATA,
                    f"{f}: {suffix} images need an image library; convert them to PGM/PPM "
                    "(e.g. `convert in.png out.ppm`)",
                )
            if suffix not in PNM_SUFFIXES:
                continue
            try:
                images.append(read_pnm(f.read_bytes()))
            except PnmError as e:
                raise WorkerError(ExitCode.BAD_DATA, f"{f}: {e}") from None
            labels.append(c)
            found += 1
        if not found:
            raise WorkerError(ExitCode.BAD_DATA, f"{folder}: no PGM/PPM images")
    channels = max(im.shape[2] for im in images)
    tensors = [
        _resize(np.repeat(im, channels, axis=2) if im.shape[2] < channels else im, size)
        for im in images
    ]
    return ImageSet(
        torch.stack(tensors), torch.tensor(labels, dtype=torch.long), tuple(f.name for f in folders)
    )


def build_data(spec: VisionDataSpec, image_size: int) -> LongTailedData:
    """The long-tailed training set and the balanced held-out set `spec` asks for."""
    if VisionDataSource(spec.source) == VisionDataSource.DIGITS:
        full = load_digits()
    else:
        assert spec.path is not None  # the config's rule
        full = load_image_folder(spec.path, image_size)
    if full.images.shape[-1] != image_size:
        full = ImageSet(
            F.interpolate(full.images, size=(image_size, image_size), mode="bilinear"),
            full.labels,
            full.class_names,
        )
    counts = longtail_counts(spec.max_per_class, spec.imbalance_ratio, full.classes)
    try:
        split: Split = split_indices(
            full.labels.tolist(), full.classes, spec.test_per_class, counts, spec.seed
        )
    except NotEnoughImages as e:
        raise WorkerError(
            ExitCode.BAD_DATA, f"data: {e} (lower maxPerClass or testPerClass)"
        ) from None
    train, test = full.subset(split.train), full.subset(split.test)
    mean = train.images.mean(dim=(0, 2, 3))
    std = train.images.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return LongTailedData(train, test, split.counts, mean, std)
