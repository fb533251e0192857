"""Typed per-sensor containers for one frame (`Frame`) and a batch of frames (`Batch`), and `collate`.

Conventions used everywhere inside gatefusion (the devkit's layouts appear only in datasets/):
  * Everything is in the ego frame of the sample's LIDAR_TOP key frame: x forward, y left, z up, metres.
  * Points are rows `(N, d)`; the meaning of each column is in LIDAR_DIMS / RADAR_DIMS.
  * Boxes are rows `[x, y, z, l, w, h, yaw, vx, vy]` (BOX_DIMS): centre, length along the heading, width,
    height, yaw about +z from +x, velocity in m/s (ego-frame axes).
  * A missing or broken sensor is data: `present[s] = False` and empty/zero tensors, never an exception.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from torch import Tensor

from sensors.names import LIDAR_DIMS, RADAR_DIMS


def _to(obj, device):
    """Copy of a dataclass with every tensor field moved to `device` (lists of tensors too)."""
    changes = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Tensor):
            changes[f.name] = v.to(device, non_blocking=True)
        elif isinstance(v, list) and v and isinstance(v[0], Tensor):
            changes[f.name] = [t.to(device, non_blocking=True) for t in v]
        elif hasattr(v, "to") and hasattr(v, "__dataclass_fields__"):
            changes[f.name] = v.to(device)
    return replace(obj, **changes)


def _pin(obj):
    """Copy of a dataclass with every tensor field in pinned (page-locked) memory, nested dataclasses and lists of
    tensors or dataclasses too: what DataLoader(pin_memory=True) calls, so that a later .to("cuda",
    non_blocking=True) copies asynchronously."""
    def pin(v):
        if isinstance(v, Tensor):
            return v.pin_memory()
        if isinstance(v, list) and v and (isinstance(v[0], Tensor) or hasattr(v[0], "__dataclass_fields__")):
            return [pin(t) for t in v]
        if hasattr(v, "__dataclass_fields__") and hasattr(v, "pin_memory"):
            return v.pin_memory()
        return v
    return replace(obj, **{f.name: pin(getattr(obj, f.name)) for f in fields(obj)})


def unit_images(images: Tensor) -> Tensor:
    """Images as float32 in [0, 1]: uint8 (as read from the files) divided by 255, float images unchanged."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images


@dataclass
class CameraData:
    """Images of the cameras (CAMERAS order). Frame: shapes below; Batch: a leading batch dim B.

    images:     (N_cam, 3, H, W) uint8 as read from the files (a quarter of float32's bytes through the loader's
                queue and the host-to-device copy), or float32 in [0, 1]: `to(device)` turns uint8 into float32 on
                the device (unit_images), and image corruptions work in float32
    intrinsics: (N_cam, 3, 3) pixel intrinsics for this H, W
    ego_T_cam:  (N_cam, 4, 4) maps camera coordinates into the key-frame ego frame
    valid:      (N_cam,) bool, False for a camera whose image is missing or unreadable
    """

    images: Tensor
    intrinsics: Tensor
    ego_T_cam: Tensor
    valid: Tensor

    pin_memory = _pin

    def to(self, device) -> "CameraData":
        """Copy on `device` with uint8 images normalised there to float32 in [0, 1] (unit_images): the division
        runs on the device instead of in the loader's workers."""
        moved = _to(self, device)
        return replace(moved, images=unit_images(moved.images))

    def select(self, idx: Tensor) -> "CameraData":
        """Batch only: the frames `idx` (K,) long, in that order."""
        return CameraData(self.images[idx], self.intrinsics[idx], self.ego_T_cam[idx], self.valid[idx])


@dataclass
class LidarData:
    """LiDAR points accumulated over sweeps, in the key-frame ego frame.

    points:      (N, 5) float32, columns LIDAR_DIMS (time_lag in seconds, >= 0)
    batch_index: (N,) int64, which frame of the batch each point belongs to (zeros in a Frame)
    ring:        (N,) int16 beam index of each point (the .pcd.bin 5th column, < 1024), -1 where unknown; None: not
                 loaded.
                 Beam-level corruptions (sensors/corruptions.py) need it; the encoders do not read it.
    stale:       (M, 5) float32 or None: an older reading of the LiDAR presented as current (the previous key
                 frame's points in its own ego frame), loaded only for the stale/stuck corruptions; a Frame-only
                 field, not collated into a Batch.
    """

    points: Tensor
    batch_index: Tensor
    ring: Tensor | None = None
    stale: Tensor | None = None

    to = _to
    pin_memory = _pin


@dataclass
class RadarData:
    """Radar points of all radars accumulated over sweeps, in the key-frame ego frame.

    points:      (M, 7) float32, columns RADAR_DIMS: position, rcs (dBsm), ego-motion compensated velocity
                 rotated into the ego frame (m/s), time_lag (s)
    batch_index: (M,) int64
    stale:       (K, 7) float32 or None: an older reading presented as current, as LidarData.stale (Frame only)
    """

    points: Tensor
    batch_index: Tensor
    stale: Tensor | None = None

    to = _to
    pin_memory = _pin


@dataclass
class Boxes:
    """Ground-truth boxes of the ten detection classes.

    boxes:      (K, 9) float32, BOX_DIMS
    labels:     (K,) int64 index into CLASSES
    attributes: (K,) int64 index into ATTRIBUTES, -1 where the class has none (barrier, traffic_cone)
    """

    boxes: Tensor
    labels: Tensor
    attributes: Tensor

    to = _to
    pin_memory = _pin

    @staticmethod
    def empty() -> "Boxes":
        return Boxes(torch.zeros(0, 9), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


@dataclass
class Detections:
    """Predicted boxes of one frame, in the ego frame (what the detector returns, what evaluation writes).

    boxes:      (K, 9) float32, BOX_DIMS
    scores:     (K,) float32 in [0, 1]
    labels:     (K,) int64 index into CLASSES
    attributes: (K,) int64 index into ATTRIBUTES, -1 where the class has none
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    attributes: Tensor

    to = _to


@dataclass
class FrameMeta:
    """What a frame is, for bookkeeping and per-condition metrics (no tensors).

    conditions: tags parsed from the scene description, one of sensors.names LIGHTINGS and one of WEATHERS
                (plus e.g. "traffic-dense" where known)
    faults:     sensors (SENSORS names) with a known fault event in this frame: read from the synthetic world's
                ground truth, or found while loading (a sensor file missing or corrupt)
    ego_pose:   (4, 4) global_T_ego of the key frame as nested lists, to write results in global coordinates
    """

    sample_token: str
    scene_name: str
    timestamp: int
    conditions: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    global_T_ego: tuple[tuple[float, ...], ...] = ()


@dataclass
class Frame:
    """One key frame: every sensor (possibly not present), the ground truth and its metadata.

    present: (3,) bool over SENSORS. A sensor that is not present still carries tensors of the right rank
             (zero images, zero points) so that any subset of sensors collates and runs.
    """

    camera: CameraData
    lidar: LidarData
    radar: RadarData
    gt: Boxes
    present: Tensor
    meta: FrameMeta

    to = _to


@dataclass
class Batch:
    """B frames. camera tensors gain a leading B; points are concatenated with `batch_index`;
    ground truth stays a list (one Boxes per frame). present: (B, 3) bool over SENSORS."""

    camera: CameraData
    lidar: LidarData
    radar: RadarData
    gt: list[Boxes]
    present: Tensor
    meta: list[FrameMeta] = field(default_factory=list)

    to = _to
    pin_memory = _pin

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def select(self, idx: Tensor) -> "Batch":
        """The frames `idx` (K,) long, in that order, as a Batch of K (points re-indexed 0..K-1)."""
        idx = idx.to(self.present.device).long()
        camera = self.camera.select(idx)
        (lp, li), keep = select_points(self.lidar.points, self.lidar.batch_index, idx, len(self))
        ring = self.lidar.ring[keep] if self.lidar.ring is not None else None
        (rp, ri), _ = select_points(self.radar.points, self.radar.batch_index, idx, len(self))
        listed = idx.tolist()
        return Batch(camera, LidarData(lp, li, ring), RadarData(rp, ri), [self.gt[i] for i in listed],
                     self.present[idx], [self.meta[i] for i in listed if i < len(self.meta)])


def select_points(points: Tensor, batch_index: Tensor, idx: Tensor, batch_size: int
                  ) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """((points, batch index re-indexed 0..K-1 in the order of `idx` (K,)), keep mask over the input points)."""
    remap = torch.full((batch_size,), -1, dtype=torch.long, device=batch_index.device)
    remap[idx] = torch.arange(len(idx), device=batch_index.device)
    new = remap[batch_index.long()]
    keep = new >= 0
    return (points[keep], new[keep]), keep


def _cat_points(parts: list[Tensor], dim: int) -> tuple[Tensor, Tensor]:
    if not parts:
        return torch.zeros(0, dim), torch.zeros(0, dtype=torch.long)
    points = torch.cat(parts, 0)
    index = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(parts)])
    return points, index


def collate(frames: list[Frame]) -> Batch:
    """Stack frames into a Batch; point sets of different lengths are concatenated with a batch index (LiDAR ring
    indices alongside, -1 for frames without them); the Frame-only `stale` readings are left out. Images stay
    uint8 when every frame's are (the usual case); frames with float images (a corruption ran) make all float."""
    images = [f.camera.images for f in frames]
    if len({im.dtype for im in images}) > 1:
        images = [unit_images(im) for im in images]
    cam = CameraData(
        images=torch.stack(images),
        intrinsics=torch.stack([f.camera.intrinsics for f in frames]),
        ego_T_cam=torch.stack([f.camera.ego_T_cam for f in frames]),
        valid=torch.stack([f.camera.valid for f in frames]),
    )
    lp, li = _cat_points([f.lidar.points for f in frames], len(LIDAR_DIMS))
    rp, ri = _cat_points([f.radar.points for f in frames], len(RADAR_DIMS))
    ring = None
    if any(f.lidar.ring is not None for f in frames):  # -1 for the points of frames loaded without it
        ring = torch.cat([f.lidar.ring if f.lidar.ring is not None else torch.full((len(f.lidar.points),), -1)
                          for f in frames]).to(torch.int16)
    return Batch(
        camera=cam,
        lidar=LidarData(lp, li, ring),
        radar=RadarData(rp, ri),
        gt=[f.gt for f in frames],
        present=torch.stack([f.present for f in frames]),
        meta=[f.meta for f in frames],
    )
