"""The oracle below the sensor, as bench/oracle.py --fine computes it: per frame, per camera view and per BEV tile,
a cheap choice whose detections score as well as full fusion's on that frame, chosen with the ground truth. It
bounds what a gate deciding per view and per region could save with this detector. Not a bench itself: it has no
command line.

The decision space of one frame: each of the N camera views off, low or high (a view off never runs,
sensors/camera.py); the LiDAR off, coarse, or fine in any subset of the T x T tiles of the BEV grid and coarse in
the rest (FusionDetector.forward's `tiles`); the radar on or off. Its cost is fusion/cost.py's FineCosts, in the
units of the model's latency table, as a fraction of full.

The search is greedy, one pass, in this order, from full fusion: for each view (CAMERAS order), off if that keeps
the frame as good as full, else low if that does; then each tile coarse (row-major); then, with every tile coarse,
the LiDAR off; then the radar off (never every sensor off). A step is kept when the frame's score stays
at_least_as_good as full's (bench/frame_oracle.py: at least as many ground-truth boxes matched by detections with
score > threshold within 2 m, at most as many such detections matching nothing). One pass finds a cheap choice, not
the cheapest: a step refused early is not retried after later ones. Each frame also gets the per-frame oracle over
the static configurations (bench/frame_oracle.py's rule), so that both stand on the same frames.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from bench.frame_oracle import (FULL, SCORE_THRESHOLD, at_least_as_good, choose, detections_filter, frame_score,
                                load_ground_truth, stats)


def search(detect, full_views: list[int], lidar: bool, radar: bool, tiles: int, cost) -> tuple[dict, int]:
    """The greedy pass over one frame (module docstring). detect(views, tiles, lidar_mode, radar_on) -> score;
    cost(views, tiles, lidar_mode, radar_on) -> cost. Returns the choice {views, tiles, lidar, radar, cost,
    score} and the number of forward passes it took."""
    state = {"views": list(full_views), "tiles": [[True] * tiles for _ in range(tiles)],
             "lidar": "fine" if lidar else "off", "radar": radar}
    runs = 1
    reference = detect(**state)

    def attempt(**change) -> bool:
        nonlocal runs
        trial = {**state, **change}
        if not (any(trial["views"]) or trial["lidar"] != "off" or trial["radar"]):
            return False  # at least one sensor runs, as in every static configuration
        runs += 1
        if at_least_as_good(detect(**trial), reference):
            state.update(change)
            return True
        return False

    for n, mode in enumerate(full_views):
        if mode == 0:
            continue
        for lower in range(mode):  # off first, then each mode below
            views = list(state["views"])
            views[n] = lower
            if attempt(views=views):
                break
    if state["lidar"] == "fine":
        for r in range(tiles):
            for c in range(tiles):
                grid = [list(row) for row in state["tiles"]]
                grid[r][c] = False
                attempt(tiles=grid, lidar="coarse" if not any(map(any, grid)) else "fine")
        if state["lidar"] == "coarse":
            attempt(lidar="off")
    if state["radar"]:
        attempt(radar=False)
    return {**state, "cost": cost(**state), "score": list(detect(**state))}, runs + 1


def fine_oracle(model, dataset, positions: list[int], nusc, split: str, fine_costs, table: dict, out: str | Path,
                threshold: float = SCORE_THRESHOLD, progress: bool = True) -> dict:
    """Run the fine oracle and the per-frame static oracle over the frames `positions` of `dataset` with `model`
    (a GateFusionModule in eval mode); write out/{fine,static,full}/results.json, out/choices.jsonl and
    out/metrics.json (the devkit's NDS and mAP of full fusion, the static oracle and the fine oracle on these
    frames, their mean costs as fractions of full, and the fine oracle's selection: share of views per mode, of fine
    tiles, of LiDAR and radar modes) and return the metrics."""
    from tqdm import tqdm

    from datasets.evaluation import detections_to_results, official_eval, write_json, write_results
    from fusion.cost import config_cost, static_configs
    from fusion.detector import SensorConfig
    from sensors.frame import collate
    from sensors.names import MODES, SENSORS

    out = Path(out)
    detector = model.detector
    keep = detections_filter(nusc)
    configs = static_configs()
    full_table = config_cost(table, configs[0])
    full_fine = fine_costs.full()
    T = fine_costs.tiles
    results = {"fine": {}, "static": {}, "full": {}}
    choices = []
    bar = tqdm(positions, unit="frame", disable=not progress)
    for i in bar:
        batch = collate([dataset[i]])
        meta = batch.meta[0]
        token = meta.sample_token
        gt = load_ground_truth(nusc, split, [token])[token]
        present = batch.present[0].bool().tolist()
        memo: dict = {}

        def rows(decisions, views=None, tiles=None):
            with torch.no_grad():
                det = detector.head.decode(detector(batch, decisions, views=views, tiles=tiles))
            return detections_to_results(det, [meta])[token]

        def detect(views, tiles, lidar, radar):
            key = (tuple(views), tuple(map(tuple, tiles)), lidar, radar)
            if key not in memo:
                dec = torch.tensor([[max(views), MODES["lidar"].index(lidar), int(radar)]])
                kept = keep({token: rows(dec, torch.tensor([views]), torch.tensor([tiles]))})[token]
                memo[key] = (frame_score(kept, gt, threshold), kept)
            return memo[key][0]

        def cost(views, tiles, lidar, radar):
            return fine_costs.cost(views, tiles, lidar, radar) / full_fine

        full_views = [len(MODES["camera"]) - 1 if ok else 0
                      for ok in batch.camera.valid[0].bool().tolist()] if present[0] else [0] * fine_costs.views
        choice, runs = search(detect, full_views, present[1], present[2], T, cost)
        key = (tuple(choice["views"]), tuple(map(tuple, choice["tiles"])), choice["lidar"], choice["radar"])
        results["fine"][token] = memo[key][1]

        scores, costs, kept = {}, {}, {}
        for c in configs:
            dec = c.decisions(batch.present)
            kept[str(c)] = keep({token: rows(dec)})[token]
            scores[str(c)] = frame_score(kept[str(c)], gt, threshold)
            costs[str(c)] = (config_cost(table, SensorConfig.from_indices(dec[0])) / full_table,)
        static = choose(scores, costs)
        results["static"][token], results["full"][token] = kept[static], kept[FULL]
        choices.append({"sample_token": token, "scene": meta.scene_name, "conditions": list(meta.conditions),
                        "faults": list(meta.faults), "gt_boxes": len(gt), **choice, "runs": runs,
                        "full_score": list(scores[FULL]), "static": static, "static_cost": costs[static][0]})
        bar.set_postfix(fine=f"{sum(c['cost'] for c in choices) / len(choices):.2f}",
                        static=f"{sum(c['static_cost'] for c in choices) / len(choices):.2f}")
    bar.close()

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "choices.jsonl", "w") as f:
        f.writelines(json.dumps(c) + "\n" for c in choices)
    summaries = {}
    for name, res in results.items():
        path = write_results(out / name / "results.json", res, {s: True for s in SENSORS})
        summaries[name] = official_eval(nusc, path, split, out / name / "devkit")["overall"]
    views = [v for c in choices for v in c["views"]]
    lidar_fine = [c for c in choices if c["lidar"] == "fine"]
    metrics = {
        "frames": len(choices), "split": split, "score_threshold": threshold, "tiles": T,
        "full": {"nds": summaries["full"]["nds"], "map": summaries["full"]["map"], "cost": stats([1.0] * len(choices))},
        "static_oracle": {"nds": summaries["static"]["nds"], "map": summaries["static"]["map"],
                          "cost": stats(c["static_cost"] for c in choices)},
        "fine_oracle": {"nds": summaries["fine"]["nds"], "map": summaries["fine"]["map"],
                        "cost": stats(c["cost"] for c in choices)},
        "selection": {
            "views": {m: sum(v == i for v in views) / max(1, len(views)) for i, m in enumerate(MODES["camera"])},
            "lidar": {m: sum(c["lidar"] == m for c in choices) / len(choices) for m in MODES["lidar"]},
            "fine_tiles_when_fine": (sum(sum(map(sum, c["tiles"])) for c in lidar_fine)
                                     / max(1, len(lidar_fine) * T * T)),
            "radar_on": sum(c["radar"] for c in choices) / len(choices)},
        "costs": dataclasses.asdict(fine_costs),
        "forward_passes": stats(c["runs"] for c in choices),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


HEADER = ("frames", "NDS  ", "x full", "mAP  ", "cost/full")  # after 'oracle'


def format_fine(m: dict) -> str:
    """Full fusion, the per-frame static oracle and the fine oracle on the same frames, then the fine oracle's
    selection."""
    lines = [f"oracles on {m['frames']} frames of {m['split']}: per frame among the 17 static configurations, and per "
             f"view and per tile ({m['tiles']}x{m['tiles']}) by the greedy pass of bench/fine_oracle.py; cost in the "
             "latency table's units as a fraction of full (LiDAR tiles at their block-sparse cost, FineCosts)",
             "| oracle                  | " + " | ".join(HEADER) + " |",
             "|-------------------------|--------|-------|--------|-------|-----------|"]
    full = m["full"]["nds"]
    for name, key in (("full fusion (no oracle)", "full"), ("per frame, static", "static_oracle"),
                      ("per view and tile", "fine_oracle")):
        r = m[key]
        ratio = f"{r['nds'] / full:6.2f}" if full > 0 else "     -"
        lines.append(f"| {name:<23} | {m['frames']:6d} | {r['nds']:.3f} | {ratio} | {r['map']:.3f} | "
                     f"{r['cost']['mean']:9.3f} |")
    s = m["selection"]
    lines += ["", "the fine oracle's choices: views " + ", ".join(f"{k} {v:.0%}" for k, v in s["views"].items())
              + "; LiDAR " + ", ".join(f"{k} {v:.0%}" for k, v in s["lidar"].items())
              + f"; fine tiles where LiDAR is fine {s['fine_tiles_when_fine']:.0%}; radar on {s['radar_on']:.0%}"]
    return "\n".join(lines)
