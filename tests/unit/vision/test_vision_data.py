"""The long-tailed digits, the seeded split, head/medium/tail, and image folders of PGM/PPM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from carina.workloads.config import ExitCode, VisionDataSpec
from carina.workloads.errors import WorkerError
from carina.workloads.vision.datasets import build_data, load_image_folder
from carina.workloads.vision.longtail import class_groups, longtail_counts, split_indices
from carina.workloads.vision.pnm import PnmError, read_pnm, write_pnm


@pytest.mark.parametrize(
    ("ratio", "counts"),
    [
        (10, [100, 77, 60, 46, 36, 28, 22, 17, 13, 10]),
        (50, [100, 65, 42, 27, 18, 11, 7, 5, 3, 2]),
        (100, [100, 60, 36, 22, 13, 8, 5, 3, 2, 1]),
    ],
)
def test_digits_training_set_has_the_asked_imbalance_ratio(ratio: int, counts: list[int]) -> None:
    data = build_data(VisionDataSpec(imbalance_ratio=ratio), image_size=8)
    per_class = torch.bincount(data.train.labels, minlength=10).tolist()
    assert per_class == counts == data.counts
    assert per_class[0] / per_class[-1] == ratio
    assert per_class == sorted(per_class, reverse=True)
    # n_c = n_max * ratio^(-c / (C - 1)), rounded
    assert per_class == [round(100 * ratio ** (-c / 9)) for c in range(10)]


def test_held_out_set_is_balanced_and_disjoint_from_training() -> None:
    data = build_data(VisionDataSpec(imbalance_ratio=100, test_per_class=50), image_size=8)
    assert torch.bincount(data.test.labels, minlength=10).tolist() == [50] * 10
    train = {tuple(x.flatten().tolist()) for x in data.train.images}
    test = {tuple(x.flatten().tolist()) for x in data.test.images}
    # digits has a few duplicate images; the split itself never shares an index
    assert len(train & test) <= 2
    split = split_indices(list(range(10)) * 20, 10, 5, [10] * 10, seed=0)
    assert not set(split.train) & set(split.test)


def test_digits_images_are_8x8_grey_in_unit_range_and_standardized_by_training_stats() -> None:
    data = build_data(VisionDataSpec(), image_size=8)
    assert data.train.images.shape[1:] == (1, 8, 8)
    assert 0.0 <= float(data.train.images.min()) <= float(data.train.images.max()) <= 1.0
    z = data.normalize(data.train.images)
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(z.std()) == pytest.approx(1.0, abs=1e-2)
    assert build_data(VisionDataSpec(), image_size=16).train.images.shape[1:] == (1, 16, 16)


def test_the_split_is_fixed_by_its_seed() -> None:
    a = build_data(VisionDataSpec(seed=3), image_size=8)
    b = build_data(VisionDataSpec(seed=3), image_size=8)
    c = build_data(VisionDataSpec(seed=4), image_size=8)
    assert torch.equal(a.train.images, b.train.images)
    assert torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.train.images, c.train.images)


def test_more_images_than_a_class_has_is_refused_as_bad_data() -> None:
    with pytest.raises(WorkerError, match="class 0 has 178 images") as err:
        build_data(VisionDataSpec(max_per_class=150, test_per_class=50), image_size=8)
    assert err.value.exit_code == ExitCode.BAD_DATA


def test_head_medium_tail_are_thirds_of_the_classes_by_training_count() -> None:
    assert class_groups(longtail_counts(100, 100, 10)) == {
        "head": [0, 1, 2, 3],
        "medium": [4, 5, 6],
        "tail": [7, 8, 9],
    }
    # by count, not by index; ties by index
    assert class_groups([1, 50, 5, 50, 9, 2]) == {
        "head": [1, 3],
        "medium": [2, 4],
        "tail": [0, 5],
    }


# ---------------------------------------------------------------- PGM / PPM


def test_pnm_reads_ascii_and_binary_grey_and_colour() -> None:
    grey = b"P2\n# a comment\n3 2\n4\n0 1 2\n3 4 4\n"
    img = read_pnm(grey)
    assert img.shape == (2, 3, 1)
    np.testing.assert_allclose(img[:, :, 0], [[0, 0.25, 0.5], [0.75, 1, 1]])
    colour = b"P3 1 1 255 255 0 51"
    np.testing.assert_allclose(read_pnm(colour)[0, 0], [1.0, 0.0, 0.2])
    rgb = np.random.default_rng(0).random((5, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(read_pnm(write_pnm(rgb)), rgb, atol=1 / 255)
    sixteen = b"P5 2 1 65535\n" + np.array([0, 65535], dtype=">u2").tobytes()
    np.testing.assert_allclose(read_pnm(sixteen)[0, :, 0], [0.0, 1.0])
    with pytest.raises(PnmError, match="magic"):
        read_pnm(b"\x89PNG\r\n")
    with pytest.raises(PnmError, match="samples"):
        read_pnm(b"P5 4 4 255\n\x00\x01")


def write_folder(root: Path, classes: dict[str, int], size: int, colour: set[str]) -> None:
    rng = np.random.default_rng(0)
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            shape = (size, size, 3) if name in colour else (size, size)
            image = rng.random(shape).astype(np.float32)
            suffix = "ppm" if name in colour else "pgm"
            (root / name / f"{i}.{suffix}").write_bytes(write_pnm(image))


def test_image_folder_reads_a_class_per_folder_resized_to_the_model(tmp_path: Path) -> None:
    write_folder(tmp_path, {"cat": 3, "ant": 2, "bee": 4}, size=12, colour={"bee"})
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    images = load_image_folder(tmp_path, size=8)
    assert images.class_names == ("ant", "bee", "cat")  # sorted folder names
    assert images.labels.tolist() == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert images.images.shape == (9, 3, 8, 8)  # grey repeated: one image is in colour
    assert float(images.images.min()) >= 0.0
    assert float(images.images.max()) <= 1.0


def test_image_folder_is_cut_long_tailed_like_digits(tmp_path: Path) -> None:
    write_folder(tmp_path, {f"c{i}": 14 for i in range(4)}, size=6, colour=set())
    spec = VisionDataSpec(
        source="image-folder",
        path=str(tmp_path),
        imbalance_ratio=10,
        max_per_class=10,
        test_per_class=4,
    )
    data = build_data(spec, image_size=8)
    assert data.counts == [10, 5, 2, 1]
    assert torch.bincount(data.train.labels).tolist() == [10, 5, 2, 1]
    assert torch.bincount(data.test.labels).tolist() == [4, 4, 4, 4]
    assert data.train.images.shape[1:] == (1, 8, 8)


def test_png_images_are_refused_with_what_to_do(tmp_path: Path) -> None:
    write_folder(tmp_path, {"a": 2, "b": 2}, size=4, colour=set())
    (tmp_path / "b" / "x.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(WorkerError, match=r"x\.png: \.png images need an image library") as err:
        load_image_folder(tmp_path, size=4)
    assert err.value.exit_code == ExitCode.BAD_DATA
    with pytest.raises(WorkerError, match="no such folder") as missing:
        load_image_folder(tmp_path / "absent", size=4)
    assert missing.value.exit_code == ExitCode.NO_INPUT
