"""Training augmentation of whole frames: global flip (y -> -y), rotation about z and scaling, applied jointly
to LiDAR points, radar points and velocities, ground-truth boxes and camera extrinsics; optionally the robustness
suite's sensor corruptions (CorruptionAugment); and the sampler that gives every item its own reproducible seed.

One 4x4 matrix A = S @ R_z @ F (flip first, then rotate, then scale) maps the original ego frame into the
augmented one. Points: p <- A p; velocities: v <- A[:3, :3] v; boxes: centre <- A c, size <- s * size,
yaw <- theta + (-yaw if flipped else yaw), velocity <- A v. Cameras: ego_T_cam <- A @ ego_T_cam, so projecting an
augmented 3D point with inverse(ego_T_cam) and the unchanged intrinsics lands on the same pixel of the unchanged
image. With a flip (or a scale) ego_T_cam is no longer rigid: use a general matrix inverse (torch.linalg.inv),
never the rigid shortcut (R^T, -R^T t), on augmented extrinsics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from sensors.frame import Boxes, Frame


def augment_matrix(theta: float, scale: float, flip: bool) -> np.ndarray:
    """(4, 4) A = S @ R_z(theta) @ F, F = diag(1, -1, 1) when flip."""
    c, s = math.cos(theta), math.sin(theta)
    A = np.eye(4)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    A[:3, :3] = scale * R @ np.diag([1.0, -1.0 if flip else 1.0, 1.0])
    return A


def augment_frame(frame: Frame, theta: float, scale: float, flip: bool) -> Frame:
    """The frame seen through A = augment_matrix(theta, scale, flip) (see the module docstring)."""
    A = torch.from_numpy(augment_matrix(theta, scale, flip)).float()
    L = A[:3, :3]

    lidar = frame.lidar.points.clone()
    lidar[:, :3] = lidar[:, :3] @ L.T
    radar = frame.radar.points.clone()
    radar[:, :3] = radar[:, :3] @ L.T
    radar[:, 4:6] = radar[:, 4:6] @ L[:2, :2].T

    boxes = frame.gt.boxes.clone()
    boxes[:, :3] = boxes[:, :3] @ L.T
    boxes[:, 3:6] = boxes[:, 3:6] * scale
    yaw = -boxes[:, 6] if flip else boxes[:, 6]
    boxes[:, 6] = torch.atan2(torch.sin(yaw + theta), torch.cos(yaw + theta))
    boxes[:, 7:9] = boxes[:, 7:9] @ L[:2, :2].T

    camera = replace(frame.camera, ego_T_cam=A @ frame.camera.ego_T_cam)
    return replace(
        frame,
        lidar=replace(frame.lidar, points=lidar),
        radar=replace(frame.radar, points=radar),
        gt=Boxes(boxes, frame.gt.labels.clone(), frame.gt.attributes.clone()),
        camera=camera,
    )


@dataclass
class GlobalAugment:
    """Random global augmentation: theta ~ U(rotation), scale ~ U(scale), flip with probability flip_prob.
    Called as augment(frame, rng) with a numpy Generator, so an item's augmentation depends only on its seed."""

    rotation: tuple[float, float] = (-math.pi / 4, math.pi / 4)
    scale: tuple[float, float] = (0.95, 1.05)
    flip_prob: float = 0.5

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        theta = float(rng.uniform(*self.rotation))
        scale = float(rng.uniform(*self.scale))
        flip = bool(rng.random() < self.flip_prob)
        return augment_frame(frame, theta, scale, flip)


@dataclass
class CorruptionAugment:
    """With probability `probability` per frame, one corruption of `names` (sensors/corruptions.py), drawn uniformly,
    at a severity drawn uniformly from 1-5 (the faults have none), seeded by the item's generator, so that a frame is
    corrupted differently in every epoch and never as the suite's token-seeded evaluation corrupts it. Applied before
    GlobalAugment (the corruptions are defined in the loaded ego frame). What it is for: a gate that has seen
    degraded sensors during training can learn from their glimpses that they no longer earn their cost."""

    names: tuple[str, ...]
    probability: float

    def __post_init__(self):
        from sensors.corruptions import spec
        self.names = tuple(self.names)
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"corruption probability must be in [0, 1], got {self.probability}")
        if self.probability > 0 and not self.names:
            raise ValueError("corruption probability > 0 needs at least one corruption name")
        self.specs = [spec(n) for n in self.names]  # ValueError listing the valid names

    @property
    def needs_stale(self) -> bool:
        """Whether a corruption drawn may need the loader's stale readings (NuScenesDataset(stale_readings=True))."""
        return self.probability > 0 and any(s.needs_stale for s in self.specs)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        if not self.specs or rng.random() >= self.probability:
            return frame
        s = self.specs[int(rng.integers(len(self.specs)))]
        param = s.params[int(rng.integers(len(s.params)))] if s.has_severity else None
        return s.fn(frame, param, rng)


@dataclass
class Chain:
    """Augmentations applied in order, each as augment(frame, rng) with the item's one generator."""

    steps: tuple

    def __call__(self, frame: Frame, rng: np.random.Generator) -> Frame:
        for step in self.steps:
            frame = step(frame, rng)
        return frame


class SeededSampler(torch.utils.data.Sampler):
    """Yields (index, item_seed) keys for NuScenesDataset: a shuffled (or ordered) epoch of indices, each with a
    fresh seed drawn in the main process from (seed, epoch). Augmentations are then reproducible whatever the
    number of workers, and differ between epochs even with persistent workers. The epoch advances on every
    iteration (or is set with set_epoch)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**62, size=self.n)
        return iter([(int(i), int(s)) for i, s in zip(order, seeds)])
