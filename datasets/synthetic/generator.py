"""The whole world: run every scene (in worker processes when asked; the output does not depend on how many), then
write the tables, the map, splits.json and synthetic_faults.json, and return a summary of what was written."""
from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from datasets.synthetic.config import TRAFFIC_LEVELS, WorldConfig, plan_world
from datasets.synthetic.scene import SCENE_TABLES, generate_scene
from datasets.synthetic.tables import TABLES, static_tables, write_map
from sensors.names import CAMERAS, CLASSES, LIDAR, LIGHTINGS, SENSORS, WEATHERS


def _generate_scene_job(args) -> dict:
    """generate_scene for a worker process: args = (out as str, config, plan)."""
    out, config, plan = args
    return generate_scene(Path(out), config, plan)


def generate(out: str | Path, config: WorldConfig, workers: int = 1) -> dict:
    """Write a complete nuScenes-format world to `out` (must not exist or be empty) and return a summary:
    scenes, samples, files (per sensor and total), bytes, seconds, class counts, conditions, splits, faults."""
    start = time.perf_counter()
    config.validate()
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"refusing to write into {out}: it exists and is not an empty folder "
                              f"(the synthetic generator never overwrites)")
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_world(config)
    jobs = [(str(out), config, p) for p in plans]
    if workers == 1 or len(plans) == 1:
        results = [_generate_scene_job(j) for j in jobs]
    else:
        # fork: workers start at once, without re-importing the package (spawn where fork is missing)
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(plans)), mp_context=ctx) as pool:
            results = list(pool.map(_generate_scene_job, jobs))
    tables, splits, faults = write_metadata(out, config, plans, results)
    summary = summarize(out, config, plans, results, (tables, splits, faults))
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return summary


def write_metadata(out: Path, config: WorldConfig, plans: list, results: list[dict]) -> tuple[dict, dict, dict]:
    """Write the tables (static rows, every scene's rows, the map), splits.json and synthetic_faults.json under
    out/<version>; return the tables, the splits and the fault ground truth."""
    tables = static_tables()
    for name in SCENE_TABLES:
        tables[name] = [row for r in results for row in r["rows"][name]]
    map_tok, map_file = write_map(out, config.seed)
    tables["map"] = [{"token": map_tok, "log_tokens": [row["token"] for row in tables["log"]],
                      "category": "semantic_prior", "filename": map_file}]
    meta_dir = out / config.version
    meta_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        (meta_dir / f"{name}.json").write_text(json.dumps(tables[name], indent=0))
    splits = {"synth_train": [p.name for p in plans if p.split == "train"],
              "synth_val": [p.name for p in plans if p.split == "val"],
              "synth_all": [p.name for p in plans]}
    (meta_dir / "splits.json").write_text(json.dumps(splits, indent=1))
    faults = {tok: sensors for r in results for tok, sensors in r["faults"].items()}
    (meta_dir / "synthetic_faults.json").write_text(json.dumps(faults, indent=1, sort_keys=True))
    return tables, splits, faults


def summarize(out: Path, config: WorldConfig, plans: list, results: list[dict], written: tuple) -> dict:
    """Summary of a written world (written = write_metadata's tables, splits, faults): scenes, samples, files (per
    sensor and total), bytes, seconds (None here), class counts, conditions, samples with a fault."""
    tables, splits, faults = written
    files = Counter()
    for r in results:
        for channel, c in r["files"].items():
            files["camera" if channel in CAMERAS else "lidar" if channel == LIDAR else "radar"] += c
    total_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    classes = Counter()
    for r in results:
        classes.update(r["classes"])
    conditions = Counter()
    for p in plans:
        conditions.update([p.lighting, p.weather, f"traffic-{p.traffic}"])
    return {
        "dataroot": str(out), "version": config.version, "scenes": len(plans),
        "samples": len(tables["sample"]),
        "split_samples": {s: sum(config.samples_per_scene for _ in names) for s, names in splits.items()},
        "files": {**{s: files[s] for s in SENSORS}, "total": sum(1 for p in out.rglob("*") if p.is_file())},
        "bytes": total_bytes, "seconds": None,  # set by generate
        "class_counts": {c: classes[c] for c in CLASSES},
        "conditions": {c: conditions[c] for c in (*LIGHTINGS, *WEATHERS, *(f"traffic-{t}" for t in TRAFFIC_LEVELS))},
        "fault_samples": len(faults),
    }
