"""The index of a split: devkit tables -> one info dict per key frame, cached on disk.

The devkit (`nuscenes.NuScenes`) is used once, to build the index of a split: per key frame the relative file
paths of every sensor and its sweeps with their transforms into the key-frame ego frame, timestamps, intrinsics,
ground-truth boxes already converted to project boxes ([x, y, z, l, w, h, yaw, vx, vy] in the key-frame ego frame,
through `sensors.geometry.box_from_nuscenes` and the devkit's `box_velocity`) and the frame's metadata: the
conditions parsed from its scene's description and the sensor faults of `<version>/synthetic_faults.json`. The index
is packed into numpy arrays (datasets/packed.py PackedIndex: DataLoader workers share its pages instead of copying
millions of Python objects) and pickled under a cache directory keyed by a hash of the dataroot, version, split
and the table files' sizes and mtimes, so it is rebuilt when any of them changes. Items are then read without any devkit query
(datasets/nuscenes.py). Sweeps follow each channel's `prev` chain back over earlier key frames, as the devkit does;
time_lag = key LIDAR_TOP timestamp - file timestamp (s).
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

from datasets.packed import PackedIndex
from datasets.splits import TABLES, check_dataroot, optional_json, split_scenes
from sensors.geometry import box_from_nuscenes, invert, transform
from sensors.names import ATTRIBUTES, CAMERAS, CLASSES, LIDAR, LIGHTINGS, RADARS, SENSORS, WEATHERS

INDEX_FORMAT = 2  # 2: PackedIndex
DEFAULT_SWEEPS = 3


# ----------------------------------------------------------------------------------------------- conditions, faults

def parse_conditions(description: str) -> tuple[str, ...]:
    """Tags from a scene description, case-insensitive: one of LIGHTINGS (the darkest named: night, then dusk;
    default day), one of WEATHERS (rain, then fog; default clear), then "traffic-<level>" where the description says
    "traffic <level>"."""
    d = description.lower()
    tags = [_first_named(d, LIGHTINGS[:0:-1], LIGHTINGS[0]), _first_named(d, WEATHERS[1:], WEATHERS[0])]
    m = re.search(r"\btraffic[ _-]+([a-z]+)", d)
    if m:
        tags.append(f"traffic-{m.group(1)}")
    return tuple(tags)


def _first_named(description: str, names: tuple[str, ...], default: str) -> str:
    """The first of names that starts a word of the description, else default."""
    return next((n for n in names if re.search(rf"\b{n}", description)), default)


def read_faults(root: Path, version: str) -> dict[str, tuple[str, ...]]:
    """{sample token: the faulty sensors (SENSORS order)} of `<version>/synthetic_faults.json` ({} when absent)."""
    path = root / version / "synthetic_faults.json"
    data = optional_json(path, "sensor faults") or {}
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
    faults = read_faults(root, version)
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
               workers: int = 1, n_sweeps: int = DEFAULT_SWEEPS) -> tuple[PackedIndex, Path, bool]:
    """(index, cache file, built now?): the cached index of the split, built, packed (the files' ego_T_sensor and
    global_T_ego, folded into key_T_sensor, left out) and written atomically if absent."""
    key = index_key(dataroot, version, split, n_sweeps)
    cache = Path(cache_dir) if cache_dir else default_cache_dir(dataroot)
    path = cache / f"{version}-{split}-{key}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as f:
                return pickle.load(f), path, False
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            warnings.warn(f"index cache {path} is unreadable ({e}); rebuilding it")
    infos = PackedIndex.pack(build_index(dataroot, version, split, workers=workers, n_sweeps=n_sweeps))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(infos, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return infos, path, True
