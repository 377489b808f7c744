"""The DeiT student and the ResNet teacher: what goes in, what comes out."""

from __future__ import annotations

import pytest
import torch

from carina.workloads.config import VisionModelSpec, VisionPreset
from carina.workloads.vision.resnet import ResNet
from carina.workloads.vision.vit import DeiT, PatchEmbed, average_heads

torch.set_num_threads(1)


def tiny(dist_token: bool = True, channels: int = 1, classes: int = 10):
    return VisionModelSpec().resolve(channels, classes, dist_token)


def test_patch_embedding_cuts_an_image_into_patch_tokens() -> None:
    arch = tiny()  # 8x8 images, 2x2 patches, d 64
    tokens = PatchEmbed(arch)(torch.randn(3, 1, 8, 8))
    assert tokens.shape == (3, 16, 64)


def test_deit_gives_class_and_distillation_logits_per_image() -> None:
    model = DeiT(tiny())
    cls, dist = model(torch.randn(5, 1, 8, 8))
    assert cls.shape == (5, 10)
    assert dist is not None
    assert dist.shape == (5, 10)
    assert not torch.allclose(cls, dist)  # two tokens, two heads
    assert model.pos_embed.shape == (1, 16 + 2, 64)


def test_test_time_prediction_is_the_mean_of_the_two_heads() -> None:
    model = DeiT(tiny()).eval()
    x = torch.randn(4, 1, 8, 8)
    out = model.predict(x)
    assert set(out) == {"cls", "dist", "avg"}
    torch.testing.assert_close(out["avg"], (out["cls"] + out["dist"]) / 2)
    torch.testing.assert_close(average_heads(out["cls"], out["dist"]), out["avg"])


def test_a_plain_vit_has_a_class_token_only_and_predicts_with_it() -> None:
    model = DeiT(tiny(dist_token=False)).eval()
    cls, dist = model(torch.randn(2, 1, 8, 8))
    assert dist is None
    assert model.dist_token is None
    assert model.head_dist is None
    assert model.pos_embed.shape == (1, 16 + 1, 64)
    out = model.predict(torch.randn(2, 1, 8, 8))
    assert set(out) == {"cls", "avg"}
    torch.testing.assert_close(out["avg"], out["cls"])
    assert cls.shape == (2, 10)


def test_resnet_teacher_gives_class_logits_and_pooled_features() -> None:
    arch = tiny()  # stages of 16, 32, 64 channels: 8x8 -> 4x4 -> 2x2
    teacher = ResNet(arch)
    x = torch.randn(4, 1, 8, 8)
    assert teacher(x).shape == (4, 10)
    assert teacher.features(x).shape == (4, 64)


@pytest.mark.parametrize(("size", "patch"), [(32, 4), (224, 16)])
def test_small_preset_takes_colour_images_of_32_or_224_pixels(size: int, patch: int) -> None:
    spec = VisionModelSpec(preset=VisionPreset.SMALL, image_size=size, patch_size=patch)
    arch = spec.resolve(in_channels=3, num_classes=100, dist_token=True)
    assert (arch.d_model, arch.n_layers, arch.n_heads) == (384, 12, 6)  # DeiT-S
    assert arch.n_patches == (size // patch) ** 2
    assert arch.teacher_blocks == 5  # ResNet-32
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        cls, dist = DeiT(arch)(x)
        assert ResNet(arch)(x).shape == (1, 100)
    assert cls.shape == (1, 100)
    assert dist is not None


def test_a_patch_that_does_not_tile_the_image_is_refused() -> None:
    with pytest.raises(ValueError, match="imageSize must be divisible by patchSize"):
        VisionModelSpec(image_size=8, patch_size=3)
