"""nuScenes-format dataset: the cached per-sample index of a split (datasets/index.py) -> `sensors.frame.Frame`.

Items are read without any devkit query, through the readers of datasets/readers.py: LiDAR points within 1 m of the
sensor in |x| and |y| removed (`from_file_multisweep`'s remove_close), radar velocities rotated into the key-frame
ego frame, images resized to image_size with their intrinsics.

Broken input never raises in `__getitem__`: the sensor (or camera: CameraData.valid) is marked not present,
`warnings.warn` names the file and the problem, and the sensor goes into `meta.faults`. LiDAR is present when its
key-frame file loads, radar when any radar's key-frame file loads, camera when any camera's image loads. A split
whose sensor files are mostly absent is the exception: the dataset's constructor raises MissingSensorFilesError when
more than half of its key frames have no usable key-frame file of any sensor (`check_sensor_files`), so that
training and evaluation stop before their first step instead of running on empty frames.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from datasets.index import load_index
from datasets.readers import SensorFileError, check_sensor_files, read_image, read_lidar, read_radar, scale_intrinsic
from datasets.splits import check_dataroot
from sensors.frame import Boxes, CameraData, Frame, FrameMeta, LidarData, RadarData
from sensors.geometry import apply, rotate
from sensors.names import CAMERAS, IMAGE_SIZE, LIDAR_DIMS, RADAR_DIMS, SENSORS

LIDAR_MIN_DISTANCE = 1.0


def even_subset(n: int, budget: int) -> np.ndarray:
    """Indices (<= budget,) int64 of n points spread evenly: all when n <= budget, else the ranks r where
    (r + 1) * budget // n > r * budget // n, the choice of sensors.points.budget_points at inference (the LiDAR
    encoder's point budget), so that a frame cut here gives that encoder the same points. Computed as the one such
    r per k = 1 .. budget, r = ceil(k * n / budget) - 1."""
    if n <= budget:
        return np.arange(n, dtype=np.int64)
    k = np.arange(1, budget + 1, dtype=np.int64)
    return (k * n + budget - 1) // budget - 1


def _drop_nonfinite(points: np.ndarray, path: Path, kind: str) -> tuple[np.ndarray, bool]:
    ok = np.all(np.isfinite(points), axis=1)
    if ok.all():
        return points, False
    warnings.warn(f"{kind} file {path}: dropped {int((~ok).sum())} of {len(ok)} points with NaN/inf values")
    return points[ok], True


class NuScenesDataset(torch.utils.data.Dataset):
    """Key frames of one split of a nuScenes-format dataroot as `Frame`s (key-frame ego frame, float32).

    lidar_sweeps / radar_sweeps: files accumulated per channel (key frame + previous sweeps).
    image_size: (W, H) the six camera images are resized to; intrinsics are scaled to match.
    cache_dir: where the index is cached (default <dataroot>/.gatefusion_cache, or a user cache dir).
    augment: optional callable (frame, numpy Generator) -> frame applied to every item; an item's generator is
    seeded from (seed, index) or from an explicit per-item seed when the key is an (index, seed) pair
    (see datasets.augment.SeededSampler). sensors.corruptions.Corruption is one (it seeds itself from the token).
    stale_readings: also load LidarData.stale / RadarData.stale, the previous key frame's points of the same scene
    in that frame's own ego frame (what a stale or stuck sensor delivers as current); None for a scene's first key
    frame. Costs a second read of the point files, so only the stale/stuck corruptions ask for it.
    lidar_points: keep at most this many LiDAR points per frame, chosen as the LiDAR encoder's inference budget
    chooses them (every n/budget-th point, `even_subset`), before the kept points are transformed (None: all).
    It leaves a model's outputs unchanged only where the LiDAR encoder alone reads the points, at inference, in
    the mode whose budget this is: not in training (the encoder samples at random, the camera's depth loss reads
    every point), not for the coarse mode or the gate's glimpse, not with the motion map or LiDAR corruptions
    (docs/pipeline.md).
    """

    def __init__(self, dataroot: str, version: str, split: str, lidar_sweeps: int = 3, radar_sweeps: int = 3,
                 image_size: tuple[int, int] = IMAGE_SIZE, cache_dir: str | None = None,
                 augment=None, seed: int = 0, index_workers: int = 1, stale_readings: bool = False,
                 lidar_points: int | None = None):
        if lidar_sweeps < 1 or radar_sweeps < 1:
            raise ValueError(f"lidar_sweeps and radar_sweeps must be >= 1, got {lidar_sweeps}, {radar_sweeps}")
        self.root = check_dataroot(dataroot, version)
        self.version, self.split = version, split
        self.lidar_sweeps, self.radar_sweeps = int(lidar_sweeps), int(radar_sweeps)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.augment, self.seed, self.stale_readings = augment, int(seed), bool(stale_readings)
        if lidar_points is not None and lidar_points < 1:
            raise ValueError(f"lidar_points must be >= 1 or None, got {lidar_points}")
        self.lidar_points = lidar_points
        n = max(self.lidar_sweeps, self.radar_sweeps)
        self.infos, self.cache_path, self.cache_built = load_index(
            self.root, version, split, cache_dir, workers=index_workers, n_sweeps=n)
        check_sensor_files(self.root, version, split, self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    def __getitem__(self, key) -> Frame:
        index, item_seed = (key if isinstance(key, tuple) else (key, None))
        frame = self.load(int(index))
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, int(index)] if item_seed is None else [self.seed, int(item_seed)])
            frame = self.augment(frame, rng)
        return frame

    def load(self, index: int) -> Frame:
        """The frame `index`, unaugmented."""
        info = self.infos[index]
        faults = set(info["faults"])
        lidar, lidar_ok = self._load_lidar(info, faults)
        radar, radar_ok = self._load_radar(info, faults)
        if self.stale_readings and index > 0 and self.infos.scene_name(index - 1) == info["scene_name"]:
            prev = self.infos[index - 1]
            lidar.stale = self._load_lidar(prev, set(), cap=False)[0].points
            radar.stale = self._load_radar(prev, set())[0].points
        camera = self._load_cameras(info, faults)
        present = torch.tensor([bool(camera.valid.any()), lidar_ok, radar_ok])
        gt = Boxes(torch.from_numpy(info["gt_boxes"]).float(), torch.from_numpy(info["gt_labels"]).long(),
                   torch.from_numpy(info["gt_attributes"]).long())
        meta = FrameMeta(
            sample_token=info["token"], scene_name=info["scene_name"], timestamp=info["timestamp"],
            conditions=tuple(info["conditions"]), faults=tuple(s for s in SENSORS if s in faults),
            global_T_ego=tuple(tuple(float(v) for v in row) for row in info["global_T_ego"]),
        )
        return Frame(camera=camera, lidar=lidar, radar=radar, gt=gt, present=present, meta=meta)

    def _load_lidar(self, info: dict, faults: set, cap: bool = True) -> tuple[LidarData, bool]:
        def near(raw):  # the devkit's remove_close
            return (np.abs(raw[:, 0]) < LIDAR_MIN_DISTANCE) & (np.abs(raw[:, 1]) < LIDAR_MIN_DISTANCE)

        def rows(raw, key_T_sensor, lag, out):
            out[:, :3] = apply(key_T_sensor, raw[:, :3])
            out[:, 3], out[:, 4], out[:, 5] = raw[:, 3], lag, raw[:, 4]  # the ring rides along as a last column

        points, ok = self._accumulate(info["lidar"], self.lidar_sweeps, read_lidar, "LiDAR", "lidar", faults, rows,
                                      len(LIDAR_DIMS) + 1, near, self.lidar_points if cap else None)
        return LidarData(points[:, :-1].contiguous(), torch.zeros(len(points), dtype=torch.long),
                         points[:, -1].to(torch.int16)), ok

    def _load_radar(self, info: dict, faults: set) -> tuple[RadarData, bool]:
        def rows(raw, key_T_sensor, lag, out):
            out[:, :3] = apply(key_T_sensor, raw[:, :3])
            out[:, 3] = raw[:, 5]
            out[:, 4:6] = rotate(key_T_sensor, np.stack([raw[:, 8], raw[:, 9], np.zeros(len(raw))], 1))[:, :2]
            out[:, 6] = lag

        points, ok = self._accumulate(info["radar"], self.radar_sweeps, read_radar, "radar", "radar", faults, rows,
                                      len(RADAR_DIMS))
        return RadarData(points, torch.zeros(len(points), dtype=torch.long)), ok

    def _accumulate(self, fs: dict, n_sweeps: int, read, kind: str, sensor: str, faults: set, rows, dims: int,
                    drop=None, cap: int | None = None) -> tuple[torch.Tensor, bool]:
        """The point files of a file set (each channel's key frame and up to n_sweeps-1 sweeps) read with `read`,
        non-finite points and those where drop(raw) is True dropped, at most `cap` of them kept (even_subset over
        all files' points in order), and written as key-frame ego rows by rows(raw, key_T_sensor, time_lag, out)
        into one float32 array: ((N, dims) float32, present). present: some channel's key-frame file loaded.
        An unreadable file is warned about and puts `sensor` into `faults`; a channel whose key-frame file is
        unreadable contributes nothing (its sweeps are not read), a missing sweep only its own points."""
        parts, present, broken = [], False, set()
        for i, (rel, channel, sweep) in enumerate(zip(fs["path"], fs["channel"], fs["sweep"])):
            if sweep >= n_sweeps or channel in broken:
                continue
            path = self.root / rel
            try:
                raw = read(path)
            except SensorFileError as e:
                warnings.warn(str(e))
                faults.add(sensor)
                if sweep == 0:
                    broken.add(channel)
                continue
            present = present or sweep == 0
            raw, bad = _drop_nonfinite(raw, path, kind)
            if bad:
                faults.add(sensor)
            parts.append((raw[~drop(raw)] if drop is not None else raw, i))
        if not (present and parts):
            return torch.zeros((0, dims)), present
        sizes = np.asarray([len(raw) for raw, _ in parts])
        keep = even_subset(int(sizes.sum()), cap) if cap is not None else None
        ends = np.cumsum(sizes)
        out = np.empty((len(keep) if keep is not None else int(ends[-1]), dims), dtype=np.float32)
        at = 0
        for (raw, i), end, size in zip(parts, ends, sizes):
            if keep is not None:
                lo, hi = np.searchsorted(keep, [end - size, end])
                raw = raw[keep[lo:hi] - (end - size)]
            rows(raw, fs["key_T_sensor"][i], fs["time_lag"][i], out[at:at + len(raw)])
            at += len(raw)
        return torch.from_numpy(out), present

    def _load_cameras(self, info: dict, faults: set) -> CameraData:
        W, H = self.image_size
        n = len(CAMERAS)
        images = np.zeros((n, H, W, 3), dtype=np.uint8)
        intrinsics = torch.eye(3).repeat(n, 1, 1)
        ego_T_cam = torch.eye(4).repeat(n, 1, 1)
        valid = torch.zeros(n, dtype=torch.bool)
        fs = info["cameras"]
        for j, channel in enumerate(fs["channel"]):
            i = CAMERAS.index(channel)
            ego_T_cam[i] = torch.from_numpy(fs["key_T_sensor"][j]).float()
            try:
                images[i], original = read_image(self.root / fs["path"][j], (W, H))
            except SensorFileError as e:
                warnings.warn(str(e))
                faults.add("camera")
                continue
            intrinsics[i] = torch.from_numpy(scale_intrinsic(fs["intrinsic"][j], original, (W, H))).float()
            valid[i] = True
        images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8: normalised on the device
        return CameraData(images=images, intrinsics=intrinsics, ego_T_cam=ego_T_cam, valid=valid)
