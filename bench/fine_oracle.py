"""The oracle below the sensor, as bench/oracle.py --fine computes it: per frame, per camera view and per BEV tile,
a cheap choice whose detections score as well as full fusion's on that frame, chosen with the ground truth. It
bounds what a gate deciding per view and per region could save with this detector. Not a bench itself: it has no
command line.

The decision space of one frame: each of the N camera views off, low or high (a view off never runs,
sensors/camera.py); the LiDAR off, coarse, or fine in any subset of the T x T tiles of the BEV grid and coarse in
the rest (FusionDetector.forward's `tiles`); the radar on or off. Its cost is fusion/cost.py's FineCosts, in the
units of the model's latency table, as a fraction of full.

The search starts from the per-frame static oracle's choice (bench/frame_oracle.py's rule: the cheapest static
configuration as good as full fusion on the frame; the cameras that are not valid left off) and goes down from
there, greedy, one pass, in this order: for each view (CAMERAS order), off if that keeps the frame as good as full,
else each mode below its own that does; then each tile coarse (row-major), and back to fine everywhere if the few
fine tiles left cost more; then, with every tile coarse, the LiDAR off; then the radar off (never every sensor off).
A step is kept when the frame's score stays at_least_as_good as full fusion's (at least as many ground-truth boxes
matched by detections with score > threshold within 2 m, at most as many such detections matching nothing). So it
never costs more than the static oracle, and finds a cheap choice, not the cheapest: a step refused early is not
retried after later ones, and a choice reached only by first raising something is never seen. Full fusion and both
oracles are scored by the devkit on the same frames.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from bench.frame_oracle import (FULL, SCORE_THRESHOLD, at_least_as_good, choose, detections_filter, frame_score,
                                load_ground_truth, stats)


def search(detect, full: dict, start: dict, tiles: int, cost) -> tuple[dict, int]:
    """The greedy pass over one frame (module docstring) from the choice `start`, which must be as good as `full`
    (both {views, lidar, radar}: each view's mode index, the LiDAR's mode, the radar on or off; every tile fine).
    detect(views, tiles, lidar, radar) -> score; cost(views, tiles, lidar, radar) -> cost. Returns the choice
    {views, tiles, lidar, radar, cost, score} and the number of choices it scored."""
    every = [[True] * tiles for _ in range(tiles)]
    reference = detect(**full, tiles=every)
    state = {**start, "views": list(start["views"]), "tiles": every}
    runs = 2
    if not at_least_as_good(detect(**state), reference):
        raise ValueError(f"search: the start {start} is not as good as full {full}")

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

    for n, mode in enumerate(start["views"]):
        if mode == 0:
            continue
        for lower in range(mode):  # off first, then each mode below
            views = list(state["views"])
            views[n] = lower
            if attempt(views=views):
                break
    needed = 0  # tiles whose score needed fine
    if state["lidar"] == "fine":
        fine = {"tiles": state["tiles"], "lidar": "fine"}
        for r in range(tiles):
            for c in range(tiles):
                grid = [list(row) for row in state["tiles"]]
                grid[r][c] = False
                attempt(tiles=grid, lidar="coarse" if not any(map(any, grid)) else "fine")
        needed = sum(map(sum, state["tiles"]))
        if cost(**state) > cost(**{**state, **fine}):  # a few fine tiles cost more than fine everywhere
            state.update(fine)
    if state["lidar"] == "coarse":
        attempt(lidar="off")
    if state["radar"]:
        attempt(radar=False)
    return {**state, "cost": cost(**state), "score": list(detect(**state)), "tiles_needed": needed}, runs + 1


class FrameRunner:
    """One frame's detections under any decision below the sensor, as FusionDetector.forward computes them in eval
    mode, each encoder output computed once and kept: the camera per set of views, the LiDAR's fine and coarse maps
    (composited per set of fine tiles, as coarse_outside_tiles does), the radar; then the shared part and the
    decoding. The search runs dozens of choices on one frame; most change one encoder."""

    def __init__(self, detector, batch):
        self.detector, self.batch = detector, batch
        self.device = batch.present.device
        self.cache: dict = {}

    def encoder(self, sensor: str, mode: str, views: tuple | None = None) -> torch.Tensor:
        key = (sensor, mode, views)
        if key not in self.cache:
            with torch.no_grad():
                if views is not None:  # each view at its own mode: FusionDetector.encode's composite
                    decisions = torch.tensor([[max(views), 0, 0]], device=self.device)
                    self.cache[key] = self.detector.encode(self.batch, decisions,
                                                           views=torch.tensor([views], device=self.device))[sensor]
                else:
                    idx = torch.zeros(1, dtype=torch.long, device=self.device)
                    self.cache[key] = self.detector.run_encoder(sensor, self.batch, idx, mode)
        return self.cache[key]

    def rows(self, views, tiles, lidar: str, radar: bool, score_threshold: float | None = None) -> list[dict]:
        """results.json rows of the frame under the choice (the head's score threshold, or `score_threshold`)."""
        from datasets.evaluation import detections_to_results
        from fusion.detector import composite_tiles

        features = {}
        if any(views):
            features["camera"] = self.encoder("camera", "views", tuple(views))
        if lidar == "coarse" or (lidar == "fine" and not all(map(all, tiles))):
            features["lidar"] = self.encoder("lidar", "coarse")
        if lidar == "fine":
            fine = self.encoder("lidar", "fine")
            if "lidar" in features:
                fine = composite_tiles(fine, features["lidar"], torch.tensor([tiles], device=self.device),
                                       self.detector.grid)
            features["lidar"] = fine
        if radar:
            features["radar"] = self.encoder("radar", "on")
        used = torch.tensor([[s in features for s in ("camera", "lidar", "radar")]], device=self.device)
        with torch.no_grad():
            out = self.detector.shared(features, used)
            detections = self.detector.head.decode(out, score_threshold)
        meta = self.batch.meta[0]
        return detections_to_results(detections, [meta])[meta.sample_token]


def selection(choices: list[dict], tiles: int) -> dict:
    """What the fine oracle chose on `choices`: frames, mean cost, the share of views at each camera mode, of frames
    at each LiDAR mode, of fine tiles among the frames whose LiDAR ran fine, of frames with the radar on, and the
    static oracle's mean cost on the same frames."""
    from sensors.names import MODES

    views = [v for c in choices for v in c["views"]]
    fine = [c for c in choices if c["lidar"] == "fine"]
    return {"frames": len(choices), "cost": sum(c["cost"] for c in choices) / len(choices),
            "static_cost": sum(c["static_cost"] for c in choices) / len(choices),
            "views": {m: sum(v == i for v in views) / max(1, len(views)) for i, m in enumerate(MODES["camera"])},
            "lidar": {m: sum(c["lidar"] == m for c in choices) / len(choices) for m in MODES["lidar"]},
            "fine_tiles": sum(sum(map(sum, c["tiles"])) for c in fine) / max(1, len(fine) * tiles * tiles),
            "tiles_needed": sum(c["tiles_needed"] for c in fine) / max(1, len(fine) * tiles * tiles),
            "cost_parts": {k: sum(c["cost_parts"][k] for c in choices) / len(choices)
                           for k in choices[0]["cost_parts"]},
            "radar_on": sum(c["radar"] for c in choices) / len(choices)}


def fine_oracle(model, dataset, positions: list[int], nusc, split: str, fine_costs, table: dict, out: str | Path,
                threshold: float = SCORE_THRESHOLD, progress: bool = True) -> dict:
    """Run the fine oracle and the per-frame static oracle over the frames `positions` of `dataset` with `model`
    (a GateFusionModule in eval mode); write out/{fine,static,full}/results.json, out/choices.jsonl and
    out/metrics.json (the devkit's NDS and mAP of full fusion, the static oracle and the fine oracle on these
    frames, their mean costs as fractions of full, and the fine oracle's selection: share of views per mode, of fine
    tiles, of LiDAR and radar modes) and return the metrics."""
    from tqdm import tqdm

    from datasets.evaluation import official_eval, write_json, write_results
    from fusion.cost import config_cost, static_configs
    from fusion.detector import SensorConfig
    from sensors.frame import collate
    from sensors.names import MODES, SENSORS

    out = Path(out)
    device = next(model.parameters()).device
    keep = detections_filter(nusc)
    configs = static_configs()
    full_table = config_cost(table, configs[0])
    full_fine = fine_costs.full()
    T = fine_costs.tiles
    top = {s: MODES[s][-1] for s in SENSORS}
    results = {"fine": {}, "static": {}, "full": {}}
    choices = []
    truth = load_ground_truth(nusc, split, [dataset.infos[i]["token"] for i in positions])
    bar = tqdm(positions, unit="frame", disable=not progress)
    for i in bar:
        batch = collate([dataset[i]]).to(device)
        meta = batch.meta[0]
        token = meta.sample_token
        gt = truth[token]
        runner = FrameRunner(model.detector, batch)
        memo: dict = {}

        def detect(views, tiles, lidar, radar):
            key = (tuple(views), tuple(map(tuple, tiles)), lidar, radar)
            if key not in memo:
                kept = keep({token: runner.rows(views, tiles, lidar, radar, threshold)})[token]
                memo[key] = frame_score(kept, gt, threshold)
            return memo[key]

        def cost(views, tiles, lidar, radar):
            return fine_costs.cost(views, tiles, lidar, radar) / full_fine

        def final(views, tiles, lidar, radar):  # every detection, as results.json keeps them
            return keep({token: runner.rows(views, tiles, lidar, radar)})[token]

        every = [[True] * T for _ in range(T)]
        valid = batch.camera.valid[0].bool().tolist()

        def ran(config: SensorConfig) -> SensorConfig:  # the configuration with this frame's absent sensors off
            return SensorConfig.from_indices(config.decisions(batch.present)[0])

        def state(config: SensorConfig) -> dict:  # a static configuration as a choice below the sensor
            used = ran(config)
            mode = MODES["camera"].index(used.camera)
            return {"views": [mode if ok else 0 for ok in valid], "lidar": used.lidar, "radar": used.radar == "on"}

        scores, costs = {}, {}
        for c in configs:
            scores[str(c)] = detect(**state(c), tiles=every)
            costs[str(c)] = (config_cost(table, ran(c)) / full_table,)
        static = choose(scores, costs)
        for name, config in (("static", SensorConfig.parse(static)), ("full", SensorConfig(**top))):
            results[name][token] = final(**state(config), tiles=every)
        choice, runs = search(detect, state(SensorConfig(**top)), state(SensorConfig.parse(static)), T, cost)
        results["fine"][token] = final(choice["views"], choice["tiles"], choice["lidar"], choice["radar"])
        choice["cost_parts"] = {k: v / full_fine for k, v in fine_costs.parts(
            choice["views"], choice["tiles"], choice["lidar"], choice["radar"]).items()}
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
    groups = {"all": choices}
    for c in choices:
        for g in c["conditions"] + (["fault"] if c["faults"] else []):
            groups.setdefault(g, []).append(c)
    metrics = {
        "frames": len(choices), "split": split, "score_threshold": threshold, "tiles": T,
        "full": {"nds": summaries["full"]["nds"], "map": summaries["full"]["map"], "cost": stats([1.0] * len(choices))},
        "static_oracle": {"nds": summaries["static"]["nds"], "map": summaries["static"]["map"],
                          "cost": stats(c["static_cost"] for c in choices)},
        "fine_oracle": {"nds": summaries["fine"]["nds"], "map": summaries["fine"]["map"],
                        "cost": stats(c["cost"] for c in choices)},
        "selection": {g: selection(cs, T) for g, cs in groups.items()},
        "costs": dataclasses.asdict(fine_costs),
        "forward_passes": stats(c["runs"] for c in choices),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


HEADER = ("frames", "NDS  ", "x full", "mAP  ", "cost/full")  # after 'oracle'
SELECTION_HEADER = ("view off", "view low", "view high", "lidar off", "coarse", "fine", "fine tiles", "radar",
                    "cost fine", "cost static")  # after 'frames', 'n'


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
    lines += ["", "what the fine oracle chose per frame group: share of views per camera mode, of frames per LiDAR "
              "mode, of tiles fine where the LiDAR ran fine, of frames with the radar; mean cost of the fine and the "
              "static oracle",
              "| frames        |    n | " + " | ".join(SELECTION_HEADER) + " |",
              "|---------------|------|" + "|".join("-" * (len(h) + 2) for h in SELECTION_HEADER) + "|"]
    for g, x in m["selection"].items():
        cells = [*(x["views"][k] for k in ("off", "low", "high")), *(x["lidar"][k] for k in ("off", "coarse", "fine")),
                 x["fine_tiles"], x["radar_on"]]
        shares = [f"{v:>{len(h)}.0%}" for v, h in zip(cells, SELECTION_HEADER)]
        costs = [f"{v:>{len(h)}.3f}" for v, h in zip((x["cost"], x["static_cost"]), SELECTION_HEADER[-2:])]
        lines.append(f"| {g:<13} | {x['frames']:4d} | " + " | ".join(shares + costs) + " |")
    every = m["selection"]["all"]
    lines += ["", "the fine oracle's mean cost by part (fraction of full): "
              + ", ".join(f"{k} {v:.3f}" for k, v in every["cost_parts"].items())
              + f"; where the LiDAR ran fine, tiles whose score needed fine: {every['tiles_needed']:.0%}"]
    return "\n".join(lines)
