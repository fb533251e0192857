"""nuScenes-format dataset: devkit tables -> cached per-sample index ("info" file) -> `sensors.frame.Frame`.

The devkit (`nuscenes.NuScenes`) is used once, to build the index of a split: per key frame the relative file
paths of every sensor and its sweeps with their transforms into the key-frame ego frame, timestamps, intrinsics,
ground-truth boxes already converted to project boxes ([x, y, z, l, w, h, yaw, vx, vy] in the key-frame ego frame,
through `datasets.geometry.box_from_nuscenes` and the devkit's `box_velocity`) and the frame's metadata. The index
is pickled under a cache directory keyed by a hash of the dataroot, version, split and the table files' sizes and
mtimes, so it is rebuilt when any of them changes. Items are then read without any devkit query.

Reading follows the devkit's readers: LiDAR `.pcd.bin` float32 rows (x, y, z, intensity, ring), points within
1 m of the sensor in |x| and |y| removed (`from_file_multisweep`'s remove_close); radar PCD v0.7 with the devkit's
default filters (parsed with numpy instead of the devkit's per-point struct loop: same header checks, same
filters, same "NaN first point means empty" rule). Sweeps follow each channel's `prev` chain back over earlier
key frames, as the devkit does; time_lag = key LIDAR_TOP timestamp - file timestamp (s).

Broken input never raises in `__getitem__`: the sensor (or camera: CameraData.valid) is marked not present,
`warnings.warn` names the file and the problem, and the sensor goes into `meta.faults`. LiDAR is present when its
key-frame file loads, radar when any radar's key-frame file loads, camera when any camera's image loads. A split
whose sensor files are mostly absent is the exception: the dataset's constructor raises MissingSensorFilesError when
more than half of its key frames have no usable key-frame file of any sensor (`check_sensor_files`), so that
training and evaluation stop before their first step instead of running on empty frames.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sensors.frame import Boxes, CameraData, Frame, FrameMeta, LidarData, RadarData
from sensors.geometry import apply, box_from_nuscenes, invert, rotate, transform
from sensors.names import ATTRIBUTES, CAMERAS, CLASSES, LIDAR, LIDAR_DIMS, RADAR_DIMS, RADARS, SENSORS

INDEX_FORMAT = 1
TABLES = (
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
    "sample_annotation", "sample_data", "scene", "sensor", "visibility",
)
DEFAULT_SWEEPS = 3
LIDAR_MIN_DISTANCE = 1.0
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


# ----------------------------------------------------------------------------------------------- dataroot, splits

def check_dataroot(dataroot: str | os.PathLike, version: str) -> Path:
    """The absolute dataroot after checking that `<dataroot>/<version>/` holds the 13 devkit tables."""
    root = Path(dataroot).expanduser().resolve()
    table_dir = root / version
    if not root.is_dir():
        raise FileNotFoundError(f"nuScenes dataroot {root} does not exist (expected a folder holding {version}/)")
    missing = [t for t in TABLES if not (table_dir / f"{t}.json").is_file()]
    if missing:
        found = sorted(p.name for p in root.iterdir() if (p / "sample.json").is_file())
        hint = f"; versions found there: {found}" if found else ""
        raise FileNotFoundError(
            f"{root} is not a nuScenes dataroot for version {version!r}: expected the devkit tables "
            f"{table_dir}/<table>.json, missing {', '.join(t + '.json' for t in missing)}{hint}")
    return root


def _predefined_splits() -> dict[str, list[str]]:
    from nuscenes.utils.splits import create_splits_scenes
    return create_splits_scenes()


def _compatible(split: str, version: str) -> bool:
    """The devkit's version suffix rule for its predefined splits."""
    if split.startswith("mini_"):
        return version.endswith("mini")
    if split == "test":
        return version.endswith("test")
    return version.endswith("trainval")


def _optional_json(path: Path, what: str):
    """The content of an optional JSON file (None when absent); a clear error naming it when unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file of {what} ({e})") from e


def _custom_splits(root: Path, version: str) -> dict[str, list[str]]:
    path = root / version / "splits.json"
    data = _optional_json(path, "custom splits")
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected {{split_name: [scene names]}}")
    return data


def available_splits(dataroot: str | os.PathLike, version: str) -> list[str]:
    """Predefined splits compatible with `version` followed by the custom ones of `<version>/splits.json`."""
    root = check_dataroot(dataroot, version)
    names = [s for s in _predefined_splits() if _compatible(s, version)]
    return names + [s for s in _custom_splits(root, version) if s not in names]


def split_scenes(dataroot: str | os.PathLike, version: str, split: str) -> list[str]:
    """Scene names of `split`: a predefined split (devkit's create_splits_scenes, version suffix rule) or a custom
    one from `<dataroot>/<version>/splits.json` (as devkit 1.2.0 resolves them)."""
    root = check_dataroot(dataroot, version)
    predefined = _predefined_splits()
    if split in predefined and _compatible(split, version):
        return list(predefined[split])
    custom = _custom_splits(root, version)
    if split in custom and split not in predefined:
        return [str(s) for s in custom[split]]
    valid = available_splits(root, version)
    why = f" ({split!r} is a predefined split for another version)" if split in predefined else ""
    raise ValueError(f"unknown split {split!r} for {root / version}{why}; valid splits: {', '.join(valid)}")


# ----------------------------------------------------------------------------------------------- conditions, faults

def parse_conditions(description: str) -> tuple[str, ...]:
    """Tags from a scene description, case-insensitive: lighting (day/dusk/night, default day), weather
    (clear/rain/fog, default clear), then "traffic-<level>" where the description says "traffic <level>"."""
    d = description.lower()
    lighting = "night" if re.search(r"\bnight", d) else "dusk" if re.search(r"\bdusk", d) else "day"
    weather = "rain" if re.search(r"\brain", d) else "fog" if re.search(r"\bfog", d) else "clear"
    tags = [lighting, weather]
    m = re.search(r"\btraffic[ _-]+([a-z]+)", d)
    if m:
        tags.append(f"traffic-{m.group(1)}")
    return tuple(tags)


def _read_faults(root: Path, version: str) -> dict[str, tuple[str, ...]]:
    path = root / version / "synthetic_faults.json"
    data = _optional_json(path, "sensor faults") or {}
    out = {}
    for token, sensors in data.items():
        bad = [s for s in sensors if s not in SENSORS]
        if bad:
            raise ValueError(f"{path}: sample {token} names unknown sensors {bad}; expected some of {SENSORS}")
        out[token] = tuple(s for s in SENSORS if s in sensors)
    return out


# ----------------------------------------------------------------------------------------------- index building

_NUSC = None  # the devkit instance shared with forked index workers


def _load_nusc(root: str, version: str):
    global _NUSC
    if _NUSC is None or _NUSC.dataroot != root or _NUSC.version != version:
        from nuscenes.nuscenes import NuScenes
        _NUSC = NuScenes(version=version, dataroot=root, verbose=False)
    return _NUSC


def _file_set(nusc, sds: list[dict], ego_T_global_key: np.ndarray, key_time: int) -> dict:
    """n sample_data records -> stacked arrays: path [n] (relative), channel [n], timestamp (n,), time_lag (n,) s,
    ego_T_sensor, global_T_ego, key_T_sensor (n, 4, 4) (sensor -> key-frame ego, through global),
    intrinsic (n, 3, 3) (identity for non-cameras), width, height (n,)."""
    out = {k: [] for k in ("path", "channel", "timestamp", "ego_T_sensor", "global_T_ego", "intrinsic", "width",
                           "height")}
    for sd in sds:
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        out["path"].append(sd["filename"])
        out["channel"].append(nusc.get("sensor", cs["sensor_token"])["channel"])
        out["timestamp"].append(int(sd["timestamp"]))
        out["ego_T_sensor"].append(transform(cs["rotation"], cs["translation"]))
        out["global_T_ego"].append(transform(pose["rotation"], pose["translation"]))
        K = np.asarray(cs["camera_intrinsic"] or np.eye(3), dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"{nusc.dataroot}/{nusc.version}/calibrated_sensor.json: token {cs['token']} has a "
                             f"camera_intrinsic of shape {K.shape}, expected 3x3")
        out["intrinsic"].append(K)
        out["width"].append(int(sd.get("width") or 0))
        out["height"].append(int(sd.get("height") or 0))
    fs = {k: (v if k in ("path", "channel") else np.asarray(v)) for k, v in out.items()}
    fs["time_lag"] = 1e-6 * (key_time - fs["timestamp"])
    fs["key_T_sensor"] = ego_T_global_key @ fs["global_T_ego"] @ fs["ego_T_sensor"]
    return fs


def _sweeps(nusc, sd_tokens: list[str], n: int, ego_T_global_key: np.ndarray, key_time: int) -> dict:
    """One file set over channels: per channel its key-frame file and up to n-1 previous sweeps (following
    `prev`, like the devkit), channel by channel; `sweep` (n,) numbers them along each chain (0: key frame)."""
    sds, sweep = [], []
    for token in sd_tokens:
        sd = nusc.get("sample_data", token)
        for k in range(n):
            sds.append(sd)
            sweep.append(k)
            if not sd["prev"]:
                break
            sd = nusc.get("sample_data", sd["prev"])
    fs = _file_set(nusc, sds, ego_T_global_key, key_time)
    fs["sweep"] = np.asarray(sweep, dtype=np.int64)
    return fs


def _sample_info(nusc, sample_token: str, scene: dict, faults: dict, n_sweeps: int) -> dict:
    from nuscenes.eval.detection.utils import category_to_detection_name

    sample = nusc.get("sample", sample_token)
    if LIDAR not in sample["data"]:
        raise ValueError(f"sample {sample_token} of {nusc.dataroot}/{nusc.version} has no {LIDAR} key frame")
    lidar_sd = nusc.get("sample_data", sample["data"][LIDAR])
    key_time = int(lidar_sd["timestamp"])
    pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    global_T_ego = transform(pose["rotation"], pose["translation"])
    ego_T_global = invert(global_T_ego)

    boxes, labels, attrs, num_pts = [], [], [], []
    for ann_token in sample["anns"]:
        ann = nusc.get("sample_annotation", ann_token)
        name = category_to_detection_name(ann["category_name"])
        n = int(ann["num_lidar_pts"]) + int(ann["num_radar_pts"])
        if name is None or n == 0:
            continue
        velocity = nusc.box_velocity(ann_token)[:2]
        boxes.append(box_from_nuscenes(ann["translation"], ann["size"], ann["rotation"], velocity, ego_T_global))
        labels.append(CLASSES.index(name))
        names = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
        attrs.append(next((ATTRIBUTES.index(a) for a in names if a in ATTRIBUTES), -1))
        num_pts.append(n)

    return {
        "token": sample_token,
        "scene_name": scene["name"],
        "timestamp": key_time,
        "conditions": parse_conditions(scene.get("description", "")),
        "faults": faults.get(sample_token, ()),
        "global_T_ego": global_T_ego,
        "lidar": _sweeps(nusc, [sample["data"][LIDAR]], n_sweeps, ego_T_global, key_time),
        "radar": _sweeps(nusc, [sample["data"][ch] for ch in RADARS if ch in sample["data"]], n_sweeps,
                         ego_T_global, key_time),
        "cameras": _file_set(nusc, [nusc.get("sample_data", sample["data"][ch]) for ch in CAMERAS
                                    if ch in sample["data"]], ego_T_global, key_time),
        "gt_boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 9),
        "gt_labels": np.asarray(labels, dtype=np.int64),
        "gt_attributes": np.asarray(attrs, dtype=np.int64),
        "gt_num_pts": np.asarray(num_pts, dtype=np.int64),
    }


def _scene_infos(args) -> list[dict]:
    root, version, scene_tokens, faults, n_sweeps = args
    nusc = _load_nusc(root, version)
    infos = []
    for scene_token in scene_tokens:
        scene = nusc.get("scene", scene_token)
        token = scene["first_sample_token"]
        while token:
            infos.append(_sample_info(nusc, token, scene, faults, n_sweeps))
            token = nusc.get("sample", token)["next"]
    return infos


def build_index(dataroot: str | os.PathLike, version: str, split: str, workers: int = 1,
                n_sweeps: int = DEFAULT_SWEEPS) -> list[dict]:
    """Per key frame of `split` (scene order of the scene table, samples in time order) one info dict:
    token, scene_name, timestamp, conditions, faults, global_T_ego (4, 4), lidar: file set (key frame first, then
    up to n_sweeps-1 previous sweeps), radar: file set (RADARS order, each with its sweeps), cameras: file set
    (CAMERAS order),
    gt_boxes (K, 9) float32, gt_labels (K,), gt_attributes (K,), gt_num_pts (K,) (see _file_set).
    With workers > 1 the scenes are split across processes (forked, sharing the loaded tables)."""
    global _NUSC
    try:
        return _build_index(dataroot, version, split, workers, n_sweeps)
    finally:
        _NUSC = None  # the devkit tables of a large version are GBs: do not keep them in the training process


def _build_index(dataroot, version: str, split: str, workers: int, n_sweeps: int) -> list[dict]:
    root = check_dataroot(dataroot, version)
    names = split_scenes(root, version, split)
    faults = _read_faults(root, version)
    nusc = _load_nusc(str(root), version)
    by_name = {s["name"]: s["token"] for s in nusc.scene}
    missing = [n for n in names if n not in by_name]
    wanted = set(names)
    scene_tokens = [s["token"] for s in nusc.scene if s["name"] in wanted]
    if not scene_tokens:
        raise ValueError(f"split {split!r} of {root / version}: none of its {len(names)} scenes are in scene.json "
                         f"(e.g. {names[:3]})")
    if missing:
        warnings.warn(f"split {split!r}: {len(missing)} scenes are not in {root / version}/scene.json "
                      f"(e.g. {missing[:3]}); using the {len(scene_tokens)} present")
    workers = max(1, min(int(workers), len(scene_tokens)))
    if workers == 1 or "fork" not in mp.get_all_start_methods():
        return _scene_infos((str(root), version, scene_tokens, faults, n_sweeps))
    bounds = np.linspace(0, len(scene_tokens), workers + 1).round().astype(int)
    chunks = [scene_tokens[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]  # contiguous: order is kept
    with mp.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_scene_infos, [(str(root), version, c, faults, n_sweeps) for c in chunks])
    return [info for part in parts for info in part]


def index_key(dataroot: str | os.PathLike, version: str, split: str, n_sweeps: int = DEFAULT_SWEEPS) -> str:
    """Hash of (absolute dataroot, version, split, sizes and mtimes of the tables, splits.json and
    synthetic_faults.json, stored sweep count, index format)."""
    root = check_dataroot(dataroot, version)
    stats = []
    for name in [f"{t}.json" for t in TABLES] + ["splits.json", "synthetic_faults.json"]:
        p = root / version / name
        if p.is_file():
            st = p.stat()
            stats.append((name, st.st_size, st.st_mtime_ns))
    payload = json.dumps([str(root), version, split, stats, n_sweeps, INDEX_FORMAT])
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def default_cache_dir(dataroot: str | os.PathLike) -> Path:
    """<dataroot>/.gatefusion_cache when the dataroot is writable, else a user cache dir."""
    root = Path(dataroot).expanduser().resolve()
    if os.access(root, os.W_OK):
        return root / ".gatefusion_cache"
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "gatefusion"


def load_index(dataroot: str | os.PathLike, version: str, split: str, cache_dir: str | os.PathLike | None = None,
               workers: int = 1, n_sweeps: int = DEFAULT_SWEEPS) -> tuple[list[dict], Path, bool]:
    """(infos, cache file, built now?): the cached index of the split, built (and written atomically) if absent."""
    key = index_key(dataroot, version, split, n_sweeps)
    cache = Path(cache_dir) if cache_dir else default_cache_dir(dataroot)
    path = cache / f"{version}-{split}-{key}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as f:
                return pickle.load(f), path, False
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            warnings.warn(f"index cache {path} is unreadable ({e}); rebuilding it")
    infos = build_index(dataroot, version, split, workers=workers, n_sweeps=n_sweeps)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(infos, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return infos, path, True


# ----------------------------------------------------------------------------------------------- sensor files

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


# ----------------------------------------------------------------------------------------------- file readers

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


def _drop_nonfinite(points: np.ndarray, path: Path, kind: str) -> tuple[np.ndarray, bool]:
    ok = np.all(np.isfinite(points), axis=1)
    if ok.all():
        return points, False
    warnings.warn(f"{kind} file {path}: dropped {int((~ok).sum())} of {len(ok)} points with NaN/inf values")
    return points[ok], True


# ----------------------------------------------------------------------------------------------- the dataset

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
    """

    def __init__(self, dataroot: str, version: str, split: str, lidar_sweeps: int = 3, radar_sweeps: int = 3,
                 image_size: tuple[int, int] = (320, 180), cache_dir: str | None = None,
                 augment=None, seed: int = 0, index_workers: int = 1, stale_readings: bool = False):
        if lidar_sweeps < 1 or radar_sweeps < 1:
            raise ValueError(f"lidar_sweeps and radar_sweeps must be >= 1, got {lidar_sweeps}, {radar_sweeps}")
        self.root = check_dataroot(dataroot, version)
        self.version, self.split = version, split
        self.lidar_sweeps, self.radar_sweeps = int(lidar_sweeps), int(radar_sweeps)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.augment, self.seed, self.stale_readings = augment, int(seed), bool(stale_readings)
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
        if self.stale_readings and index > 0 and self.infos[index - 1]["scene_name"] == info["scene_name"]:
            prev = self.infos[index - 1]
            lidar.stale, radar.stale = self._load_lidar(prev, set())[0].points, self._load_radar(prev, set())[0].points
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

    def _load_lidar(self, info: dict, faults: set) -> tuple[LidarData, bool]:
        def rows(raw, key_T_sensor, lag):
            raw = raw[~((np.abs(raw[:, 0]) < LIDAR_MIN_DISTANCE) & (np.abs(raw[:, 1]) < LIDAR_MIN_DISTANCE))]
            return np.concatenate([apply(key_T_sensor, raw[:, :3]), raw[:, 3:4], np.full((len(raw), 1), lag),
                                   raw[:, 4:5]], 1)  # the ring rides along as a last column

        points, ok = self._accumulate(info["lidar"], self.lidar_sweeps, read_lidar, "LiDAR", "lidar", faults, rows,
                                      len(LIDAR_DIMS) + 1)
        return LidarData(points[:, :-1].contiguous(), torch.zeros(len(points), dtype=torch.long),
                         points[:, -1].long()), ok

    def _load_radar(self, info: dict, faults: set) -> tuple[RadarData, bool]:
        def rows(raw, key_T_sensor, lag):
            vel = rotate(key_T_sensor, np.stack([raw[:, 8], raw[:, 9], np.zeros(len(raw))], 1))[:, :2]
            return np.concatenate([apply(key_T_sensor, raw[:, :3]), raw[:, 5:6], vel, np.full((len(raw), 1), lag)], 1)

        points, ok = self._accumulate(info["radar"], self.radar_sweeps, read_radar, "radar", "radar", faults, rows,
                                      len(RADAR_DIMS))
        return RadarData(points, torch.zeros(len(points), dtype=torch.long)), ok

    def _accumulate(self, fs: dict, n_sweeps: int, read, kind: str, sensor: str, faults: set, rows,
                    dims: int) -> tuple[torch.Tensor, bool]:
        """The point files of a file set (each channel's key frame and up to n_sweeps-1 sweeps) read with `read`,
        non-finite points dropped, turned into key-frame ego rows by rows(raw, key_T_sensor, time_lag) and stacked:
        ((N, dims) float32, present). present: some channel's key-frame file loaded. An unreadable file is warned
        about and puts `sensor` into `faults`; a channel whose key-frame file is unreadable contributes nothing
        (its sweeps are not read), a missing sweep only its own points."""
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
            parts.append(rows(raw, fs["key_T_sensor"][i], fs["time_lag"][i]))
        points = np.concatenate(parts, 0) if (present and parts) else np.zeros((0, dims))
        return torch.from_numpy(points.astype(np.float32)), present

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
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
        images = images.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
        return CameraData(images=images, intrinsics=intrinsics, ego_T_cam=ego_T_cam, valid=valid)


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
