"""Where a split's scenes come from: the dataroot check (`<dataroot>/<version>/` holds the 13 devkit tables) and
split resolution, as devkit 1.2.0 resolves them: a predefined split of `create_splits_scenes` (with the devkit's
version suffix rule) or a custom one from `<dataroot>/<version>/splits.json` ({split_name: [scene names]}).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

TABLES = (
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
    "sample_annotation", "sample_data", "scene", "sensor", "visibility",
)


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


def optional_json(path: Path, what: str):
    """The content of an optional JSON file (None when absent); a clear error naming it when unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file of {what} ({e})") from e


def _custom_splits(root: Path, version: str) -> dict[str, list[str]]:
    path = root / version / "splits.json"
    data = optional_json(path, "custom splits")
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
