"""Sensor files: the readers of LiDAR, radar and camera files, their error (SensorFileError), and the check that a
split's key-frame files are there at all (check_sensor_files, MissingSensorFilesError).

Reading follows the devkit's readers: LiDAR `.pcd.bin` float32 rows (x, y, z, intensity, ring); radar PCD v0.7 with
the devkit's default filters (parsed with numpy instead of the devkit's per-point struct loop: same header checks,
same filters, same "NaN first point means empty" rule); camera images through PIL, resized with their intrinsics
(scale_intrinsic).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from sensors.names import SENSORS

LIDAR_MAX_RING = 1024
RADAR_FIELDS = ("x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp", "is_quality_valid",
                "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0", "vx_rms", "vy_rms")
RADAR_INVALID_STATES = (0,)
RADAR_DYNPROP_STATES = tuple(range(7))
RADAR_AMBIG_STATES = (3,)
_PCD_TYPES = {"F": {2: "f2", 4: "f4", 8: "f8"}, "I": {1: "i1", 2: "i2", 4: "i4", 8: "i8"},
              "U": {1: "u1", 2: "u2", 4: "u4", 8: "u8"}}


class SensorFileError(ValueError):
    """A sensor file that is missing, empty, truncated or otherwise unreadable."""


class MissingSensorFilesError(ValueError):
    """Most key frames of a split have no sensor file at all: the dataroot's samples/ are missing or elsewhere."""


def _usable(path: Path) -> bool:
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def _key_files(info: dict) -> dict[str, list[str]]:
    """Relative paths of the key-frame files of one info, per sensor (sweeps left out)."""
    return {"camera": list(info["cameras"]["path"]),
            "lidar": [p for p, k in zip(info["lidar"]["path"], info["lidar"]["sweep"]) if k == 0],
            "radar": [p for p, k in zip(info["radar"]["path"], info["radar"]["sweep"]) if k == 0]}


def check_sensor_files(root: Path, version: str, split: str, infos: list[dict]) -> None:
    """Raise MissingSensorFilesError when more than half of the key frames have no key-frame file of any sensor
    that exists and is not empty (os.stat only, files are not read): such a split would train or evaluate on
    frames without sensors, with one warning per file. A frame stops at its first usable file, so a healthy
    split costs about one stat per key frame. Fewer bad frames, and missing sweeps, are left to the per-item
    warnings of `NuScenesDataset.load`."""
    empty = [info for info in infos if not any(_usable(root / rel) for rels in _key_files(info).values()
                                               for rel in rels)]
    if 2 * len(empty) <= len(infos):
        return
    lacking, example = {s: 0 for s in SENSORS}, {}
    for info in infos:
        for sensor, rels in _key_files(info).items():
            bad = [rel for rel in rels if not _usable(root / rel)]
            if not rels or len(bad) == len(rels):
                lacking[sensor] += 1
                example.setdefault(sensor, root / bad[0] if bad else None)
    per_sensor = "; ".join(f"{s}: {lacking[s]} key frames" + (f" (e.g. {example[s]})" if example.get(s) else "")
                           for s in SENSORS if lacking[s])
    raise MissingSensorFilesError(
        f"dataroot {root}, version {version}, split {split!r}: {len(empty)} of {len(infos)} key frames have no "
        f"sensor file at all (every key-frame file missing or empty). Key frames without a usable key-frame file, "
        f"per sensor: {per_sensor}. Are the sensor folders (samples/, sweeps/) under the dataroot?")


def read_lidar(path: str | os.PathLike) -> np.ndarray:
    """(N, 5) float32 rows (x, y, z, intensity, ring) of a nuScenes `.pcd.bin`, in the sensor frame.
    Raises SensorFileError for a missing, empty, truncated (size not a multiple of 20 bytes) or implausible
    file (ring column not small non-negative integers: e.g. a 4-float file read as 5 floats)."""
    path = Path(path)
    if not path.is_file():
        raise SensorFileError(f"LiDAR file {path} is missing")
    size = path.stat().st_size
    if size == 0:
        raise SensorFileError(f"LiDAR file {path} is empty (0 bytes: silent LiDAR)")
    if size % 20:
        raise SensorFileError(f"LiDAR file {path} is truncated or not 5-float rows: {size} bytes is not a "
                              f"multiple of 20")
    try:
        points = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    except OSError as e:
        raise SensorFileError(f"LiDAR file {path} is unreadable: {e}") from e
    ring = points[:, 4]
    finite = np.isfinite(ring)
    if np.any((ring[finite] != np.round(ring[finite])) | (ring[finite] < 0) | (ring[finite] >= LIDAR_MAX_RING)):
        raise SensorFileError(f"LiDAR file {path} has implausible ring indices (not integers in "
                              f"[0, {LIDAR_MAX_RING})): not (x, y, z, intensity, ring) float32 rows")
    return points


def read_radar(path: str | os.PathLike) -> np.ndarray:
    """(N, 18) float64 points (RADAR_FIELDS order) of a nuScenes radar PCD v0.7 file, sensor frame, after the
    devkit's default filters. Same checks and semantics as `RadarPointCloud.from_file`, vectorized.
    Raises SensorFileError for a missing, empty, broken-header or truncated file."""
    path = Path(path)
    if not path.is_file():
        raise SensorFileError(f"radar file {path} is missing")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SensorFileError(f"radar file {path} is unreadable: {e}") from e
    if not data:
        raise SensorFileError(f"radar file {path} is empty (0 bytes)")
    meta, pos = [], 0
    while len(meta) < 20:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        try:
            line = data[pos:nl].strip().decode("utf-8")
        except UnicodeDecodeError:
            break
        meta.append(line)
        pos = nl + 1
        if line.startswith("DATA"):
            break
    if not meta or not meta[-1].startswith("DATA"):
        raise SensorFileError(f"radar file {path} has a broken PCD header (no DATA line)")
    try:
        if not (meta[0].startswith("#") and meta[1].startswith("VERSION")):
            raise ValueError("first lines must be a comment and VERSION")
        fields = meta[2].split()[1:]
        sizes = [int(s) for s in meta[3].split()[1:]]
        types = meta[4].split()[1:]
        width, height = int(meta[6].split()[1]), int(meta[7].split()[1])
        kind = meta[10].split()[1]
        if not (meta[2].startswith("FIELDS") and meta[3].startswith("SIZE") and meta[4].startswith("TYPE")):
            raise ValueError("FIELDS/SIZE/TYPE must be lines 3-5")
        if tuple(fields) != RADAR_FIELDS or len(sizes) != len(fields) or len(types) != len(fields):
            raise ValueError(f"expected the 18 nuScenes radar fields, got {fields}")
        if width <= 0 or height != 1 or kind != "binary":
            raise ValueError(f"WIDTH {width} HEIGHT {height} DATA {kind} (need WIDTH > 0, HEIGHT 1, binary)")
        dtype = np.dtype([(f, "<" + _PCD_TYPES[t][s]) for f, t, s in zip(fields, types, sizes)])
    except (IndexError, KeyError, ValueError) as e:
        raise SensorFileError(f"radar file {path} has a broken PCD header: {e}") from e
    payload = data[pos:]
    if len(payload) < width * dtype.itemsize:
        raise SensorFileError(f"radar file {path} is truncated: {len(payload)} data bytes for {width} points of "
                              f"{dtype.itemsize} bytes")
    rec = np.frombuffer(payload, dtype=dtype, count=width)
    points = np.stack([rec[f].astype(np.float64) for f in fields], 1)
    if np.any(np.isnan(points[0])):
        return np.zeros((0, len(fields)))
    keep = (np.isin(points[:, 14], RADAR_INVALID_STATES) & np.isin(points[:, 3], RADAR_DYNPROP_STATES)
            & np.isin(points[:, 11], RADAR_AMBIG_STATES))
    return points[keep]


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB array (resized to size=(W, H) if given) and the original (w, h) of the file.
    JPEGs are DCT-downscaled while decoding where possible (same pixel-centre mapping as a resize).
    SensorFileError if the file is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SensorFileError(f"camera image {path} is missing")
    try:
        with Image.open(path) as im:
            original = im.size
            if size is not None and im.format == "JPEG":
                im.draft("RGB", size)
            im = im.convert("RGB")
            if size is not None and im.size != tuple(size):
                im = im.resize(tuple(size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8), original
    except Exception as e:  # PIL raises several types for corrupt files
        raise SensorFileError(f"camera image {path} is unreadable: {e}") from e


def scale_intrinsic(K, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """(3, 3) intrinsic of an image resized from size (w, h) to new_size (W, H), pixel centres at +0.5 (PIL)."""
    K = np.asarray(K, dtype=np.float64).copy()
    sx, sy = new_size[0] / size[0], new_size[1] / size[1]
    K[0, 0] *= sx
    K[0, 1] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K
