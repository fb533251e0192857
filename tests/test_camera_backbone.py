"""The camera's image CNN options (sensors/camera.py image_backbone): our small CNN by default, torchvision's ResNet-18
and ResNet-50 truncated at stride 8 with random weights, weights from a file or torchvision's cache, and the errors
for a missing file, an unknown name and a torch without a matching torchvision."""
from __future__ import annotations

import pytest
import torch

from fusion.detector import SensorConfig, build_detector
from sensors.camera import GEOMETRY_CHANNELS, ImageBackbone, image_backbone, import_torchvision
from tests.test_model import TINY, make_batch

try:
    import_torchvision()
    TORCHVISION_ERROR = None
except ImportError as e:
    TORCHVISION_ERROR = str(e)

needs_torchvision = pytest.mark.skipif(
    TORCHVISION_ERROR is not None,
    reason=f"torchvision does not import beside this torch (PyPI's torchvision wheels need PyPI's CUDA torch; a "
           f"CPU-only torch needs torchvision's CPU wheel of the matching release): {TORCHVISION_ERROR}")


def test_default_is_the_small_cnn():
    detector = build_detector(**TINY)
    assert type(detector.camera.backbone) is ImageBackbone
    assert all(k.startswith("body.") for k in detector.camera.backbone.state_dict())  # checkpoints load as before


def test_unknown_backbone_and_small_with_weights_raise():
    with pytest.raises(ValueError, match="unknown 'resnet34'"):
        build_detector(**TINY, camera_backbone="resnet34")
    with pytest.raises(ValueError, match="'small' has no pretrained weights"):
        image_backbone("small", 4, 8, "torchvision")


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        build_detector(**TINY, camera_backbone="resnet18", camera_backbone_weights=str(missing))


@pytest.mark.skipif(TORCHVISION_ERROR is None, reason="torchvision imports here")
def test_resnet_without_torchvision_says_why():
    with pytest.raises(ImportError, match="need torchvision built for this torch"):
        build_detector(**TINY, camera_backbone="resnet18")


@needs_torchvision
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_feature_map_matches_the_small_cnn(name):
    """Same output cells as the small CNN (stride 8, rounded up) at an odd image size, and finite."""
    torch.manual_seed(0)
    x = torch.randn(2, 3 + GEOMETRY_CHANNELS, 90, 160)
    out = image_backbone(name, 4, 50, None).eval()(x)
    assert out.shape == ImageBackbone(4, 50)(x).shape == (2, 50, 12, 20)
    assert torch.isfinite(out).all()


@needs_torchvision
def test_detector_with_resnet_trains_end_to_end():
    torch.manual_seed(0)
    detector = build_detector(**TINY, camera_backbone="resnet18").train()
    batch = make_batch(B=2, hw=(48, 80))
    outputs = detector(batch, SensorConfig("high", "off", "off").decisions(batch.present))
    loss = detector.head.loss(outputs, batch.gt)["loss"] + outputs.camera_depth_loss
    loss.backward()
    assert torch.isfinite(loss)
    conv1 = detector.camera.backbone.body[0].weight.grad
    assert conv1 is not None and conv1.abs().sum() > 0


@needs_torchvision
def test_weights_from_a_file_and_from_the_cache(tmp_path, monkeypatch):
    """A saved state dict of the full ResNet loads (RGB filters copied, geometry filters zero); "torchvision" reads
    its cache and names the file it expected when it is not there."""
    tv = import_torchvision()
    torch.manual_seed(1)
    reference = tv.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = image_backbone("resnet18", 4, 8, str(path))
    conv1 = backbone.body[0].weight
    assert torch.equal(conv1[:, :3], reference.conv1.weight) and not conv1[:, 3:].any()
    assert torch.equal(backbone.body[5][0].conv1.weight, reference.layer2[0].conv1.weight)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(FileNotFoundError, match="not in its cache .*resnet18-"):
        image_backbone("resnet18", 4, 8, "torchvision")
    cached = tmp_path / "torch-home" / "hub" / "checkpoints"
    cached.mkdir(parents=True)
    url = tv.models.ResNet18_Weights.IMAGENET1K_V1.url
    torch.save(reference.state_dict(), cached / url.rsplit("/", 1)[-1])
    assert torch.equal(image_backbone("resnet18", 4, 8, "torchvision").body[0].weight[:, :3], reference.conv1.weight)
