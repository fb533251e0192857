"""Draw what an evaluation run chose, cost and detected, frame by frame, and write one HTML report.

    python visualize.py --run runs/demo/eval [--dataroot data/synth-demo --version v1.0-synth --split synth_val]
        [--out runs/demo/eval/report] [--scenes 2 | --scene NAME ... | --all] [--score 0.3] [--interactive]

--run is an eval.py output folder (metrics.json, results.json, records.jsonl); the dataroot, version and split
default to those metrics.json records. Writes into --out (default RUN/report): timelines/<scene>.png for every
scene, panels/<scene>/<index>_<token>.png and animations/<scene>.gif for the first --scenes scenes (or those named
by --scene; every scene with --all), view3d_<token>.png (open3d, off-screen) and report.html (self-contained:
images inline).
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from PIL import Image

from sensors.names import IMAGE_SIZE


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="eval.py output folder (metrics.json, results.json, records.jsonl)")
    p.add_argument("--dataroot", default=None, help="nuScenes-format dataroot (default: metrics.json's)")
    p.add_argument("--version", default=None, help="default: metrics.json's")
    p.add_argument("--split", default=None, help="default: metrics.json's")
    p.add_argument("--out", default=None, help="output folder (default: RUN/report)")
    p.add_argument("--scenes", type=int, default=2, help="scenes drawn as panels and animations (timelines: all)")
    p.add_argument("--scene", action="append", default=None, help="draw panels of this scene (repeatable)")
    p.add_argument("--all", action="store_true", help="panels and animations of every scene")
    p.add_argument("--report-timelines", type=int, default=40, help="timelines in the report (all are written)")
    p.add_argument("--score", type=float, default=0.3, help="detections drawn and matched have score >= this")
    p.add_argument("--frame", default=None, help="sample token of the 3D view (default: the first panel's frame)")
    p.add_argument("--no-3d", action="store_true", help="skip the 3D view")
    p.add_argument("--interactive", action="store_true", help="open the 3D view in a window (needs a display)")
    p.add_argument("--lidar-sweeps", type=int, default=3, help="LiDAR sweeps drawn per frame")
    p.add_argument("--radar-sweeps", type=int, default=3, help="radar sweeps drawn per frame")
    p.add_argument("--image-width", type=int, default=IMAGE_SIZE[0],
                   help="camera images are drawn this wide (aspect kept; default: the model's default width)")
    p.add_argument("--cache-dir", default=None, help="where the dataset index cache goes")
    return p.parse_args(argv)


def draw_scenes(ds, index: dict, scenes: dict, chosen: list[str], preds: dict, quality: dict, score: float,
                out: Path) -> tuple[list, list, list, tuple | None]:
    """Panels of every recorded frame of the `chosen` scenes and each scene's animation, written under `out`;
    (panels, animation paths, one sample image per scene for the report, the report's small animation). A scene's
    images are dropped once its animation is written, so memory stays flat."""
    from tqdm import tqdm

    from report.figures import draw_panel, save_gif, save_png
    from sensors.names import MODES

    jobs = [(name, i, r) for name in chosen for i, r in enumerate(scenes[name]) if r["sample_token"] in index]
    last = {name: i for name, i, _ in jobs}
    panels, animations, samples, scene_panels, small = [], [], [], [], None
    for name, i, r in tqdm(jobs, desc="panels", unit="frame", file=sys.stdout):
        tok = r["sample_token"]
        frame = ds.load(index[tok])
        title = (f"scene {name} · key frame {i + 1} of {len(scenes[name])} · sample {tok} · "
                 f"{', '.join(r.get('conditions', ())) or 'no condition tags'}")
        d = draw_panel(frame, r, preds[tok], quality[tok], MODES, score, title)
        d.path = save_png(d.image, out / "panels" / name / f"{i:03d}_{tok}.png")
        panels.append(d)
        scene_panels.append(d)
        if i == last[name]:  # the scene's animation, then its images go (the files hold them): memory stays flat
            images = [p.image for p in scene_panels]
            animations.append(save_gif(images, out / "animations" / f"{name}.gif"))
            if small is None:  # a lighter copy for the report
                small = (name, save_gif(images, out / "animations" / f"{name}_small.gif", width=560, ms=700))
            mid = scene_panels[len(scene_panels) // 2]
            samples.append((f"{name}, sample {mid.sample_token}", mid.image))
            for p in scene_panels:
                p.image = None
            scene_panels = []

    return panels, animations, samples, small


def main(argv=None) -> dict:
    """Returns {"report": path, "timelines": [TimelineDrawing], "panels": [PanelDrawing], "animations": [path],
    "view3d": View3D | None} so that tests can check what was drawn."""
    args = parse_args(argv)
    from tqdm import tqdm

    from datasets.nuscenes import NuScenesDataset
    from report.figures import draw_timeline, save_png
    from report.page import write_report
    from report.run import class_ranges, ego_detections, load_run, match_frame
    from report.view3d import render_3d
    from sensors.names import MODES

    t0 = time.perf_counter()
    run = load_run(args.run)
    m = run.metrics
    dataroot, version, split = (args.dataroot or m.get("dataroot"), args.version or m.get("version", "v1.0-trainval"),
                                args.split or m.get("split"))
    if not dataroot or not split:
        raise ValueError("metrics.json names no dataroot/split: pass --dataroot and --split")
    out = Path(args.out) if args.out else run.path / "report"
    print(f"run {run.path}: {len(run.records)} frames; dataroot {dataroot} ({version}, {split}); writing to {out}")

    kw = {"lidar_sweeps": args.lidar_sweeps, "radar_sweeps": args.radar_sweeps, "cache_dir": args.cache_dir}
    ds = NuScenesDataset(dataroot, version, split, **kw)
    if ds.infos and ds.infos[0]["cameras"]["path"]:  # draw at the world's aspect ratio, whatever its image size
        with Image.open(ds.root / ds.infos[0]["cameras"]["path"][0]) as im:
            w, h = im.size
        ds = NuScenesDataset(dataroot, version, split, image_size=(args.image_width, round(args.image_width * h / w)),
                             **kw)
    index = {info["token"]: i for i, info in enumerate(ds.infos)}
    notes, missing = [], [r["sample_token"] for r in run.records if r["sample_token"] not in index]
    if missing:
        notes.append(f"{len(missing)} recorded frames are not in split {split} of {dataroot}: drawn without ground "
                     "truth or images")
        warnings.warn(notes[-1])

    ranges, quality, preds = class_ranges(), {}, {}
    for r in run.records:
        tok = r["sample_token"]
        if tok in index:
            info = ds.infos[index[tok]]
            preds[tok] = ego_detections(run.results.get(tok, []), info["global_T_ego"], args.score)
            quality[tok] = match_frame(preds[tok], info["gt_boxes"], info["gt_labels"], info.get("gt_num_pts"),
                                       ranges)

    if args.frame and (args.frame not in index or args.frame not in preds):
        raise ValueError(f"--frame {args.frame}: not a recorded frame of split {split}")
    scenes = run.scenes()
    unknown = set(args.scene or ()) - set(scenes)
    if unknown:
        raise ValueError(f"--scene {', '.join(sorted(unknown))}: not in the records (scenes: {', '.join(scenes)})")
    chosen = list(scenes) if args.all else args.scene or list(scenes)[:args.scenes]
    sub = f"run {run.path.resolve().name} · {version} / {split}"
    timelines = []
    for name, recs in tqdm(scenes.items(), desc="timelines", unit="scene", file=sys.stdout):
        d = draw_timeline(name, recs, [quality.get(r["sample_token"]) for r in recs], MODES, args.score, sub)
        d.path = save_png(d.image, out / "timelines" / f"{name}.png")
        if len(timelines) >= args.report_timelines:
            d.image = None  # in the file only; memory stays flat on a large split
        timelines.append(d)

    panels, animations, samples, small = draw_scenes(ds, index, scenes, chosen, preds, quality, args.score, out)

    view = None
    token = args.frame or (panels[0].sample_token if panels else None)
    if token is not None and not args.no_3d:
        rec = next(r for r in run.records if r["sample_token"] == token)
        frame = ds.load(index[token])
        title = f"scene {frame.meta.scene_name} · sample {token}"
        print(f"3D view of {token}" + (" (interactive window)" if args.interactive else ""))
        view = render_3d(frame, rec, preds[token], quality[token], title, interactive=args.interactive)
        if view.image is not None:
            view.path = save_png(view.image, out / f"view3d_{token}.png")

    if len(timelines) > args.report_timelines:
        notes.append(f"The report shows the timelines of the first {args.report_timelines} of {len(timelines)} "
                     f"scenes; all of them are in {out / 'timelines'}.")
    shown = [(d.scene, d.image) for d in timelines[:args.report_timelines]]
    view_item = (f"scene {frame.meta.scene_name}, sample {token}", view.image) if view and view.path else None
    report = write_report(out / "report.html", run, MODES, shown, samples, small, view_item, notes)
    print(f"{len(timelines)} timelines, {len(panels)} panels, {len(animations)} animations in "
          f"{time.perf_counter() - t0:.0f} s; report ({report.stat().st_size / 1e6:.1f} MB):\n{report}")
    return {"report": report, "timelines": timelines, "panels": panels, "animations": animations, "view3d": view}


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        sys.exit(f"visualize.py: error: {e}")
