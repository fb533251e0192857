"""The index of a split packed into a few numpy arrays (PackedIndex), so that DataLoader workers share it.

A list of one dict per key frame (what datasets/index.py builds from the devkit) holds millions of Python objects
at the size of nuScenes trainval; every forked worker touches their reference counts and so copies the pages that
hold them. PackedIndex keeps the same content as flat arrays (strings in one byte blob, each sample's files and
boxes as ranges of shared tables): a handful of objects whose pages stay shared after fork, and a small pickle.
`index[i]` gives sample i back as the info dict the loader reads (arrays are views into the packed ones).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FILE_SETS = ("lidar", "radar", "cameras")
GT_FIELDS = ("gt_boxes", "gt_labels", "gt_attributes", "gt_num_pts")
CAMERA_FIELDS = ("intrinsic", "width", "height")  # only the cameras' file set keeps them
SEPARATOR = "|"  # joins a sample's condition tags and faulty sensors (names without it)


@dataclass
class Strings:
    """Strings as one UTF-8 blob (uint8) with offsets (n + 1,) int64."""

    blob: np.ndarray
    offsets: np.ndarray

    @staticmethod
    def pack(values: list[str]) -> "Strings":
        encoded = [v.encode() for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return Strings(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes().decode()


@dataclass
class FileTable:
    """The files of one kind of every sample, sample after sample: rows start[i]:start[i + 1] are sample i's.

    path: Strings; channel (F,) uint8 into channels; timestamp (F,) int64; time_lag (F,) float64 s; sweep (F,)
    int16; key_T_sensor (F, 4, 4) float64; cameras only: intrinsic (F, 3, 3) float64, width, height (F,) int32."""

    start: np.ndarray
    path: Strings
    channels: tuple[str, ...]
    channel: np.ndarray
    timestamp: np.ndarray
    time_lag: np.ndarray
    sweep: np.ndarray
    key_T_sensor: np.ndarray
    intrinsic: np.ndarray | None = None
    width: np.ndarray | None = None
    height: np.ndarray | None = None

    @staticmethod
    def pack(sets: list[dict], cameras: bool) -> "FileTable":
        def cat(key: str, dtype, shape: tuple[int, ...] = ()) -> np.ndarray:
            parts = [np.asarray(s[key], dtype=dtype).reshape(-1, *shape) for s in sets if len(s["path"])]
            return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype=dtype)

        channels = tuple(sorted({c for s in sets for c in s["channel"]}))
        lookup = {c: k for k, c in enumerate(channels)}
        start = np.zeros(len(sets) + 1, dtype=np.int64)
        np.cumsum([len(s["path"]) for s in sets], out=start[1:])
        return FileTable(
            start=start, path=Strings.pack([p for s in sets for p in s["path"]]), channels=channels,
            channel=np.asarray([lookup[c] for s in sets for c in s["channel"]], dtype=np.uint8),
            timestamp=cat("timestamp", np.int64), time_lag=cat("time_lag", np.float64),
            sweep=cat("sweep", np.int16) if not cameras else np.zeros(int(start[-1]), np.int16),
            key_T_sensor=cat("key_T_sensor", np.float64, (4, 4)),
            intrinsic=cat("intrinsic", np.float64, (3, 3)) if cameras else None,
            width=cat("width", np.int32) if cameras else None, height=cat("height", np.int32) if cameras else None)

    def rows(self, i: int) -> dict:
        """Sample i's file set: path, channel (lists of str), the arrays as views."""
        lo, hi = int(self.start[i]), int(self.start[i + 1])
        out = {"path": [self.path[k] for k in range(lo, hi)],
               "channel": [self.channels[c] for c in self.channel[lo:hi]],
               "timestamp": self.timestamp[lo:hi], "time_lag": self.time_lag[lo:hi], "sweep": self.sweep[lo:hi],
               "key_T_sensor": self.key_T_sensor[lo:hi]}
        if self.intrinsic is not None:
            out.update(intrinsic=self.intrinsic[lo:hi], width=self.width[lo:hi], height=self.height[lo:hi])
        return out


@dataclass
class PackedIndex:
    """Per key frame of a split (see datasets/index.py build_index for the fields): `index[i]` is its info dict
    (`index[a:b]` a list of them), `len(index)` the number of key frames, iteration yields the info dicts in order.

    text: Strings (token, scene name, conditions, faults of sample i at 4i .. 4i + 3); timestamp (n,) int64;
    global_T_ego (n, 4, 4) float64; files: FileTable per FILE_SETS name; gt_start (n + 1,) int64 into gt_boxes
    (K, 9) float32, gt_labels, gt_attributes, gt_num_pts (K,) int64."""

    text: Strings
    timestamp: np.ndarray
    global_T_ego: np.ndarray
    files: dict[str, FileTable]
    gt_start: np.ndarray
    gt: dict[str, np.ndarray]

    @staticmethod
    def pack(infos: list[dict]) -> "PackedIndex":
        text = [v for info in infos for v in (info["token"], info["scene_name"], SEPARATOR.join(info["conditions"]),
                                              SEPARATOR.join(info["faults"]))]
        gt_start = np.zeros(len(infos) + 1, dtype=np.int64)
        np.cumsum([len(info["gt_labels"]) for info in infos], out=gt_start[1:])
        gt = {k: np.concatenate([info[k] for info in infos]) if infos else np.zeros((0, 9) if k == "gt_boxes" else 0)
              for k in GT_FIELDS}
        gt["gt_boxes"] = gt["gt_boxes"].astype(np.float32).reshape(-1, 9)
        return PackedIndex(
            text=Strings.pack(text), timestamp=np.asarray([info["timestamp"] for info in infos], dtype=np.int64),
            global_T_ego=np.asarray([info["global_T_ego"] for info in infos], dtype=np.float64).reshape(-1, 4, 4),
            files={k: FileTable.pack([info[k] for info in infos], k == "cameras") for k in FILE_SETS},
            gt_start=gt_start, gt=gt)

    def __len__(self) -> int:
        return len(self.timestamp)

    def __getitem__(self, i: int | slice) -> dict | list[dict]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} key frames")
        i = int(i) % len(self)
        lo, hi = int(self.gt_start[i]), int(self.gt_start[i + 1])
        conditions, faults = self.text[4 * i + 2], self.text[4 * i + 3]
        return {"token": self.text[4 * i], "scene_name": self.text[4 * i + 1], "timestamp": int(self.timestamp[i]),
                "conditions": tuple(conditions.split(SEPARATOR)) if conditions else (),
                "faults": tuple(faults.split(SEPARATOR)) if faults else (),
                "global_T_ego": self.global_T_ego[i],
                **{k: table.rows(i) for k, table in self.files.items()},
                **{k: v[lo:hi] for k, v in self.gt.items()}}

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def scene_name(self, i: int) -> str:
        """Sample i's scene name without building its info dict."""
        return self.text[4 * i + 1]
