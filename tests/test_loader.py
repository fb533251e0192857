"""The loader's transfer format: uint8 images normalised on the device, Batch.pin_memory, the packed index, the
loader-side LiDAR point cap (datasets/nuscenes.py lidar_points; docs/pipeline.md)."""
from __future__ import annotations

import pickle
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from datasets.nuscenes import NuScenesDataset, even_subset
from datasets.packed import FileTable, PackedIndex, Strings
from sensors.frame import Batch, collate, unit_images
from sensors.points import budget_points

V = "v1.0-synth"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("loader_cache")


@pytest.fixture(scope="module")
def ds(tiny_world, cache) -> NuScenesDataset:
    return NuScenesDataset(str(tiny_world), V, "synth_train", lidar_sweeps=3, radar_sweeps=3, cache_dir=str(cache))


def _tensors(obj):
    """Every tensor of a (nested) dataclass, lists included."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        for item in (v if isinstance(v, list) else [v]):
            if isinstance(item, torch.Tensor):
                yield item
            elif hasattr(item, "__dataclass_fields__"):
                yield from _tensors(item)


def test_images_stay_uint8_through_collate_and_are_normalised_by_to(ds):
    frames = [ds[0], ds[1]]
    batch = collate(frames)
    assert batch.camera.images.dtype == torch.uint8
    moved = batch.to("cpu")
    assert moved.camera.images.dtype == torch.float32
    assert torch.equal(moved.camera.images, batch.camera.images.to(torch.float32) / 255.0)
    corrupted = replace(frames[1], camera=replace(frames[1].camera, images=unit_images(frames[1].camera.images)))
    mixed = collate([frames[0], corrupted])  # a corruption left float images: the batch is float, same values
    assert mixed.camera.images.dtype == torch.float32 and torch.equal(mixed.camera.images, moved.camera.images)


def test_batch_pin_memory_pins_every_tensor(ds):
    batch = collate([ds[0], ds[1]])
    assert batch.lidar.ring is not None and batch.lidar.ring.dtype == torch.int16
    if not torch.cuda.is_available():
        pytest.skip("pinned memory needs CUDA")
    pinned = batch.pin_memory()
    assert isinstance(pinned, Batch) and pinned.meta == batch.meta
    tensors = list(_tensors(pinned))
    assert len(tensors) >= 12 and all(t.is_pinned() for t in tensors)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate, pin_memory=True)
    assert all(t.is_pinned() for t in _tensors(next(iter(loader))))


def test_batch_pin_memory_returns_a_batch_without_cuda(ds, monkeypatch):
    batch = collate([ds[0]])
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a: t.clone())  # no CUDA needed to walk the fields
    pinned = batch.pin_memory()
    assert isinstance(pinned, Batch) and pinned.meta == batch.meta and len(pinned.gt) == 1
    assert all(torch.equal(a, b) for a, b in zip(_tensors(pinned), _tensors(batch)))


def _leaves(obj):
    if isinstance(obj, (PackedIndex, FileTable, Strings)):
        for f in fields(obj):
            yield from _leaves(getattr(obj, f.name))
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    else:
        yield obj


def test_index_is_packed_and_small(ds, tiny_world):
    assert isinstance(ds.infos, PackedIndex)
    leaves = list(_leaves(ds.infos))
    # a fixed number of arrays and small tuples, whatever the number of frames: nothing per sample to copy-on-write
    assert all(isinstance(v, np.ndarray) or v is None or (isinstance(v, tuple) and len(v) <= 16) for v in leaves)
    assert len(leaves) < 60
    per_frame = len(pickle.dumps(ds, protocol=pickle.HIGHEST_PROTOCOL)) / len(ds)
    assert per_frame < 12_000  # the list of info dicts it replaces: about 19 kB per frame of the tiny world
    from datasets.index import build_index

    infos = build_index(tiny_world, V, "synth_train", n_sweeps=3)
    for packed, info in zip(ds.infos, infos):
        for key in ("token", "scene_name", "timestamp", "conditions", "faults"):
            assert packed[key] == info[key]
        for key in ("global_T_ego", "gt_boxes", "gt_labels", "gt_attributes", "gt_num_pts"):
            np.testing.assert_array_equal(packed[key], info[key])
        for kind in ("lidar", "radar", "cameras"):
            for key in ("path", "channel", "timestamp", "time_lag", "key_T_sensor"):
                np.testing.assert_array_equal(np.asarray(packed[kind][key]), np.asarray(info[kind][key]))


@pytest.mark.parametrize("n,budget", [(10, 3), (1000, 999), (7, 7), (5, 9), (12345, 4096)])
def test_even_subset_is_the_encoders_inference_choice(n, budget):
    keep = budget_points(torch.zeros(n, dtype=torch.long), 1, budget, random=False)
    np.testing.assert_array_equal(even_subset(n, budget), keep.numpy())


def test_point_cut_keeps_the_encoders_inputs(tiny_world, cache, ds):
    budget = 1500
    cut = NuScenesDataset(str(tiny_world), V, "synth_train", lidar_sweeps=3, radar_sweeps=3, cache_dir=str(cache),
                          lidar_points=budget)
    for i in range(len(ds)):
        full, capped = collate([ds[i]]), collate([cut[i]])
        assert len(full.lidar.points) > budget >= len(capped.lidar.points)
        keep = budget_points(full.lidar.batch_index, 1, budget, random=False)
        assert torch.equal(full.lidar.points[keep], capped.lidar.points)
        assert torch.equal(full.lidar.ring[keep], capped.lidar.ring)
        assert torch.equal(budget_points(capped.lidar.batch_index, 1, budget, random=False),
                           torch.arange(len(capped.lidar.points)))
        assert torch.equal(full.radar.points, capped.radar.points)


def test_uint8_images_give_the_checkpoints_detections(tiny_run, tiny_world):
    from fusion.checkpoint import load_checkpoint

    ckpt, cache_dir = tiny_run
    model, data = load_checkpoint(ckpt)
    dataset = NuScenesDataset(str(tiny_world), V, "synth_val", data["lidar_sweeps"], data["radar_sweeps"],
                              tuple(data["image_size"]), cache_dir=str(cache_dir))
    batch = collate([dataset[0], dataset[1]])
    float_batch = replace(batch, camera=replace(batch.camera, images=unit_images(batch.camera.images)))
    outputs = [model.detect(b)[0] for b in (float_batch, batch.to("cpu"), batch)]  # old loader, .to, unmoved
    for dets in outputs[1:]:
        for a, b in zip(outputs[0], dets):
            assert torch.equal(a.labels, b.labels) and torch.equal(a.boxes, b.boxes)
            assert torch.allclose(a.scores, b.scores, atol=1e-5, rtol=0)
