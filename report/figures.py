"""The matplotlib drawings of a run: the colours shared with the 3D view and the report, a scene's timeline
(draw_timeline: conditions, modes run, gate probabilities, cost, detection quality), a frame's panel (draw_panel:
six camera images with projected boxes, a bird's-eye view, the gate's probabilities), and PNG and GIF saving.
Each drawing function returns what it drew (TimelineDrawing, PanelDrawing) so that tests check a picture's content.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

from report.run import MATCH_DISTANCE, FrameQuality, gate_probabilities
from sensors.frame import Frame, unit_images
from sensors.geometry import apply, box_corners, invert
from sensors.names import CAMERAS, LIGHTINGS, SENSORS, WEATHERS

LEVEL_COLOURS = ("#e6e6e6", "#9ecae1", "#08519c")  # off, low/coarse, high/fine/on
LIGHTING_COLOURS = dict(zip(LIGHTINGS, ("#fff3b0", "#fdbe85", "#bcbddc"), strict=True))  # day, dusk, night
WEATHER_HATCH = dict(zip(WEATHERS[1:], ("///", "..."), strict=True))  # rain, fog; clear weather is not hatched
FAULT_COLOUR = "#d62728"
GT_COLOURS = {1: "#2ca02c", 0: "#ff7f0e", -1: "#aaaaaa"}  # matched, missed, outside the evaluation
PRED_COLOURS = {1: "#1f77b4", 0: "#d62728", -1: "#aaaaaa"}  # matched, false positive, outside the evaluation
CAMERA_GRID = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"), ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"))
SENSOR_TITLES = {"camera": "camera rig", "lidar": "LiDAR", "radar": "radars"}


def _figure_rgb(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _level(sensor: str, mode: str, modes: dict[str, tuple[str, ...]]) -> int:
    """0 off, 1 the lower resolution, 2 the higher (a sensor with one mode besides off draws it as 2)."""
    if mode not in modes[sensor]:
        raise ValueError(f"record with unknown {sensor} mode {mode!r}; expected one of {modes[sensor]}")
    i = modes[sensor].index(mode)
    return 2 if i == len(modes[sensor]) - 1 and i > 0 else i


def _mode_legend(modes) -> list[Patch]:
    names = [[m for s in SENSORS for m in modes[s] if _level(s, m, modes) == k] for k in range(3)]
    return [Patch(facecolor=LEVEL_COLOURS[k], edgecolor="k", lw=0.5, label=" / ".join(dict.fromkeys(n)))
            for k, n in enumerate(names)]


@dataclass
class TimelineDrawing:
    """What a scene's timeline shows, one entry per frame (F frames, in evaluation order).

    modes: sensor -> (F,) str, the mode each frame ran; gflops, latency_ms: (F,); recall: (F,) matched fraction of
    ground truth (NaN without any); false_positives, gt: (F,) int; conditions: (F,) tuple of tags;
    faults: sensor -> (F,) bool; gate_probs: sensor -> (F, n_modes) where the records have them (NaN rows where not).
    """

    scene: str
    tokens: list[str]
    modes: dict[str, np.ndarray]
    gflops: np.ndarray
    latency_ms: np.ndarray
    recall: np.ndarray
    false_positives: np.ndarray
    gt: np.ndarray
    conditions: list[tuple[str, ...]]
    faults: dict[str, np.ndarray]
    gate_probs: dict[str, np.ndarray] = field(default_factory=dict)
    image: np.ndarray | None = None
    path: Path | None = None


def _runs(values: list) -> list[tuple[int, int, object]]:
    """Contiguous runs of equal values: (start, stop, value)."""
    out, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            out.append((start, i, values[start]))
            start = i
    return out


def draw_timeline(scene: str, records: list[dict], qualities: list[FrameQuality | None],
                  modes: dict[str, tuple[str, ...]], min_score: float, subtitle: str = "") -> TimelineDrawing:
    """One scene's frames along x: conditions, the mode of each sensor (faults marked), the gate's probabilities
    where present, the cost (GFLOPs, ms) and the detection quality (matched ground truth, false positives)."""
    n = len(records)
    x = np.arange(n)
    probs = [gate_probabilities(r, modes) for r in records]
    gated = [s for s in SENSORS if any(s in p for p in probs)]
    d = TimelineDrawing(
        scene=scene, tokens=[r["sample_token"] for r in records],
        modes={s: np.array([r.get(s, "off") for r in records]) for s in SENSORS},
        gflops=np.array([r.get("gflops", np.nan) for r in records], dtype=np.float64),
        latency_ms=np.array([r.get("latency_ms", np.nan) for r in records], dtype=np.float64),
        recall=np.array([q.recall if q else np.nan for q in qualities], dtype=np.float64),
        false_positives=np.array([q.false_positives if q else -1 for q in qualities]),
        gt=np.array([q.gt if q else -1 for q in qualities]),
        conditions=[tuple(r.get("conditions", ())) for r in records],
        faults={s: np.array([s in r.get("faults", ()) for r in records], dtype=bool) for s in SENSORS},
        gate_probs={s: np.stack([p.get(s, np.full(len(modes[s]), np.nan)) for p in probs]) for s in gated})

    heights = [0.35, 1.2] + ([1.2] if gated else []) + [1.3, 1.3]
    fig = Figure(figsize=(min(18, max(9, 3 + 0.3 * n)), 1.1 + sum(heights) * 1.05), dpi=90)
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights, "hspace": 0.12})
    ax_cond, ax_modes, *rest = axes
    ax_gate = rest.pop(0) if gated else None
    ax_cost, ax_q = rest
    fig.suptitle(f"scene {scene}: per-frame sensor choices, cost and detections ({n} key frames)"
                 + (f"\n{subtitle}" if subtitle else ""), fontsize=11)

    for start, stop, tags in _runs(d.conditions):
        light = next((t for t in tags if t in LIGHTING_COLOURS), None)
        hatch = next((WEATHER_HATCH[t] for t in tags if t in WEATHER_HATCH), None)
        ax_cond.axvspan(start - 0.5, stop - 0.5, facecolor=LIGHTING_COLOURS.get(light, "#f0f0f0"), hatch=hatch,
                        edgecolor="#777777", lw=0)
        ax_cond.text((start + stop - 1) / 2, 0.5, ", ".join(tags) or "no condition tags", ha="center",
                     va="center", fontsize=8)
    ax_cond.set_yticks([0.5], ["conditions"])
    ax_cond.set_ylim(0, 1)

    levels = np.array([[_level(s, m, modes) for m in d.modes[s]] for s in SENSORS])
    ax_modes.imshow([[to_rgb(LEVEL_COLOURS[k]) for k in row] for row in levels], aspect="auto",
                    extent=(-0.5, n - 0.5, len(SENSORS) - 0.5, -0.5), interpolation="nearest")
    for j, s in enumerate(SENSORS):
        if n <= 40:
            for i, m in enumerate(d.modes[s]):
                ax_modes.text(i, j, m, ha="center", va="center", fontsize=6,
                              color="white" if levels[j, i] == 2 else "black")
        f = np.flatnonzero(d.faults[s])
        ax_modes.scatter(f, np.full(len(f), j + 0.32), marker="x", color=FAULT_COLOUR, s=25, zorder=3)
    ax_modes.set_yticks(range(len(SENSORS)), [SENSOR_TITLES[s] for s in SENSORS])
    ax_modes.set_ylabel("mode run", fontsize=8)
    ax_modes.legend(handles=_mode_legend(modes) + [Line2D([], [], marker="x", color=FAULT_COLOUR, ls="",
                                                          label="sensor fault in the data")],
                    loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, title="mode", title_fontsize=7)

    if ax_gate is not None:
        for j, s in enumerate(gated):
            p = np.nan_to_num(d.gate_probs[s])
            bottom = np.full(n, float(len(gated) - 1 - j))  # the first sensor on top, as in the rows above
            for k, m in enumerate(modes[s]):
                h = 0.9 * p[:, k]
                ax_gate.bar(x, h, bottom=bottom, width=0.9, color=LEVEL_COLOURS[_level(s, m, modes)],
                            edgecolor="k", lw=0.3)
                bottom = bottom + h
        ax_gate.set_yticks(np.arange(len(gated)) + 0.45, [SENSOR_TITLES[s] for s in reversed(gated)])
        ax_gate.set_ylim(0, len(gated))
        ax_gate.set_ylabel("gate P(mode)", fontsize=8)
        ax_gate.text(1.01, 0.5, "probability of each mode,\nstacked off / low / high\n(colours as above)",
                     transform=ax_gate.transAxes, va="center", fontsize=7)

    ax_cost.bar(x, d.gflops, width=0.7, color="#6baed6", label="GFLOPs (counted on the frame, left)")
    ax_cost.set_ylabel("GFLOPs / frame", fontsize=8)
    ax_ms = ax_cost.twinx()
    ax_ms.plot(x, d.latency_ms, "o-", color="#e6550d", ms=3, lw=1, label="latency ms (right)")
    ax_ms.set_ylabel("latency (ms)", fontsize=8)
    ax_ms.set_ylim(0, max(1.0, np.nanmax(d.latency_ms) * 1.15) if np.isfinite(d.latency_ms).any() else 1.0)
    ax_cost.legend(handles=[Patch(color="#6baed6", label="GFLOPs, counted once\nper mode (left)"),
                            Line2D([], [], color="#e6550d", marker="o", ms=3, label="latency ms (right)")],
                   loc="upper left", bbox_to_anchor=(1.09, 1), fontsize=7)

    ax_q.plot(x, d.recall, "s-", color=GT_COLOURS[1], ms=4, lw=1.2, label="matched GT fraction (left)")
    ax_q.set_ylim(-0.05, 1.05)
    ax_q.set_ylabel("matched GT", fontsize=8)
    ax_fp = ax_q.twinx()
    ax_fp.bar(x, np.maximum(d.false_positives, 0), width=0.35, color=PRED_COLOURS[0], alpha=0.6)
    ax_fp.step(x, np.maximum(d.gt, 0), where="mid", color="#555555", lw=1)
    ax_fp.set_ylabel("boxes", fontsize=8)
    ax_fp.set_ylim(0, max(1, int(max(d.gt.max(initial=0), d.false_positives.max(initial=0)) * 1.2) + 1))
    ax_q.legend(handles=[Line2D([], [], color=GT_COLOURS[1], marker="s", ms=4, label="matched GT fraction (left)"),
                         Patch(color=PRED_COLOURS[0], alpha=0.6, label="false positives (right)"),
                         Line2D([], [], color="#555555", label="GT boxes evaluated (right)")],
                loc="upper left", bbox_to_anchor=(1.09, 1), fontsize=7,
                title=f"score >= {min_score:g}, centre <= {MATCH_DISTANCE:g} m", title_fontsize=7)
    ax_q.set_xlabel("key frame of the scene (index, 2 Hz in nuScenes)")
    ax_q.set_xlim(-0.5, n - 0.5)
    for ax in axes:
        for i in np.flatnonzero(np.any([d.faults[s] for s in SENSORS], 0)):
            ax.axvspan(i - 0.5, i + 0.5, color=FAULT_COLOUR, alpha=0.12, lw=0)
        ax.tick_params(labelsize=7)
    ax_q.xaxis.set_major_locator(MaxNLocator(integer=True))
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=1.0 / w, right=1 - 2.5 / w, top=1 - 0.8 / h, bottom=0.5 / h)
    d.image = _figure_rgb(fig)
    return d


@dataclass
class PanelDrawing:
    """What a frame's panel shows.

    cameras_dimmed / cameras_missing: per CAMERAS entry, drawn dimmed because the camera branch did not run / drawn
    as a placeholder because the image is missing; lidar_greyed / radar_greyed: points drawn grey because the branch
    did not run; boxes: {"gt": (K, 9), "pred": (P, 9)} in the ego frame, with status: {"gt": (K,), "pred": (P,)}
    as in FrameQuality; gate_probs as gate_probabilities; in_cameras: {"gt": [6 counts], "pred": [...]} boxes
    projected into each camera image (CAMERAS order).
    """

    sample_token: str
    scene: str
    cameras_dimmed: tuple[bool, ...]
    cameras_missing: tuple[bool, ...]
    lidar_greyed: bool
    radar_greyed: bool
    lidar_points: int
    radar_points: int
    boxes: dict[str, np.ndarray]
    status: dict[str, np.ndarray]
    gate_probs: dict[str, np.ndarray]
    in_cameras: dict[str, list[int]] = field(default_factory=lambda: {"gt": [0] * 6, "pred": [0] * 6})
    image: np.ndarray | None = None
    path: Path | None = None


def _bev_boxes(ax, boxes: np.ndarray, status: np.ndarray, colours: dict, dashed: bool = False):
    """Box outlines and heading ticks, drawn with forward up and left to the left (u = -y, v = x)."""
    if not len(boxes):
        return
    c = box_corners(boxes)[:, :4, :2]
    polys = np.stack([-c[..., 1], c[..., 0]], -1)
    front = (polys[:, 0] + polys[:, 3]) / 2
    centre = np.stack([-boxes[:, 1], boxes[:, 0]], -1)
    cols = [colours[int(s)] for s in status]
    ax.add_collection(LineCollection(list(np.concatenate([polys, polys[:, :1]], 1)), colors=cols, lw=1.1,
                                     linestyles="--" if dashed else "-", zorder=4))
    ax.add_collection(LineCollection(list(np.stack([centre, front], 1)), colors=cols, lw=1.1, zorder=4))


BOX_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7),
             (0, 5), (1, 4))  # the 12 edges and a cross on the front face, as the devkit draws a box


def _camera_boxes(ax, boxes: np.ndarray, status: np.ndarray, colours: dict, K, ego_T_cam, size: tuple[int, int],
                  dashed: bool = False) -> int:
    """Draw the boxes whose corners all lie in front of the camera and that reach into the image (the devkit's
    view_points projection); returns how many were drawn."""
    from nuscenes.utils.geometry_utils import view_points

    if not len(boxes):
        return 0
    cam = apply(invert(np.asarray(ego_T_cam, dtype=np.float64)), box_corners(boxes).reshape(-1, 3))
    uv = view_points(cam.T, np.asarray(K, dtype=np.float64), normalize=True)[:2].T.reshape(-1, 8, 2)
    depth = cam[:, 2].reshape(-1, 8)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < size[0]) & (uv[..., 1] >= 0) & (uv[..., 1] < size[1])
    keep = np.flatnonzero((depth > 0.1).all(1) & inside.any(1))
    ax.add_collection(LineCollection([uv[k, list(e)] for k in keep for e in BOX_EDGES], lw=1.0,
                                     colors=[colours[int(status[k])] for k in keep for _ in BOX_EDGES],
                                     linestyles="--" if dashed else "-"))
    return len(keep)


def draw_panel(frame: Frame, record: dict, pred: dict[str, np.ndarray], quality: FrameQuality,
               modes: dict[str, tuple[str, ...]], min_score: float, title: str = "",
               bev_range: float = 55.0) -> PanelDrawing:
    """The six camera images (dimmed where the camera branch did not run, labelled with its resolution) with the
    boxes projected into them, a bird's-eye view of LiDAR and radar points (grey where not run) with ground-truth
    and predicted boxes, and the gate's probabilities where a gate chose."""
    present = [bool(v) for v in frame.present.tolist()]
    cam_mode, lidar_mode, radar_mode = (record.get(s, "off") for s in SENSORS)
    valid = frame.camera.valid.tolist()
    probs = gate_probabilities(record, modes)
    d = PanelDrawing(
        sample_token=frame.meta.sample_token, scene=frame.meta.scene_name,
        cameras_dimmed=tuple(cam_mode == "off" for _ in CAMERAS), cameras_missing=tuple(not v for v in valid),
        lidar_greyed=lidar_mode == "off", radar_greyed=radar_mode == "off",
        lidar_points=len(frame.lidar.points), radar_points=len(frame.radar.points),
        boxes={"gt": frame.gt.boxes.double().numpy().reshape(-1, 9), "pred": pred["boxes"]},
        status={"gt": quality.gt_status, "pred": quality.pred_status}, gate_probs=probs)

    fig = Figure(figsize=(17, 7.2), dpi=80)
    gs = fig.add_gridspec(3, 4, width_ratios=[1, 1, 1, 1.2], height_ratios=[1, 1, 0.45], wspace=0.04, hspace=0.14,
                          left=0.01, right=0.99, top=0.92, bottom=0.02)
    fig.suptitle(title, fontsize=11)
    images = unit_images(frame.camera.images).permute(0, 2, 3, 1).numpy()
    for r, row in enumerate(CAMERA_GRID):
        for c, name in enumerate(row):
            i, ax = CAMERAS.index(name), fig.add_subplot(gs[r, c])
            ax.set_xticks([]), ax.set_yticks([])
            if d.cameras_missing[i]:
                ax.imshow(np.full((9, 16, 3), 0.5), extent=(0, 16, 9, 0))
                ax.text(8, 4.5, "no image\n(missing or unreadable)", ha="center", va="center", color="white")
            else:
                ax.imshow(images[i] * (0.25 if d.cameras_dimmed[i] else 1.0))
                size = images[i].shape[1::-1]
                K, T = frame.camera.intrinsics[i].numpy(), frame.camera.ego_T_cam[i].numpy()
                for kind, colours in (("gt", GT_COLOURS), ("pred", PRED_COLOURS)):
                    d.in_cameras[kind][i] = _camera_boxes(ax, d.boxes[kind], d.status[kind], colours, K, T, size,
                                                          dashed=kind == "pred")
                ax.set_xlim(-0.5, size[0] - 0.5), ax.set_ylim(size[1] - 0.5, -0.5)
                if d.cameras_dimmed[i]:
                    ax.text(0.5, 0.5, "camera branch off\n(not processed)", transform=ax.transAxes, ha="center",
                            va="center", color="white", fontsize=11)
            label = f"{name}  ·  {'off' if cam_mode == 'off' else cam_mode + ' resolution'}"
            ax.set_title(label, fontsize=9, color="#888888" if cam_mode == "off" else "black", pad=2)

    ax = fig.add_subplot(gs[:2, 3])
    lidar, radar = frame.lidar.points.numpy(), frame.radar.points.numpy()
    if len(lidar):
        keep = np.abs(lidar[:, :2]).max(1) < bev_range
        lp = lidar[keep]
        ax.scatter(-lp[:, 1], lp[:, 0], s=0.4, c="#bbbbbb" if d.lidar_greyed else np.clip(lp[:, 2], -2, 4),
                   cmap=None if d.lidar_greyed else "viridis", vmin=None if d.lidar_greyed else -2,
                   vmax=None if d.lidar_greyed else 4, linewidths=0, zorder=1)
    if len(radar):
        ax.scatter(-radar[:, 1], radar[:, 0], s=14, marker="D", linewidths=0.6, zorder=3,
                   facecolors="none", edgecolors="#999999" if d.radar_greyed else "#e7298a")
        if not d.radar_greyed:
            ax.quiver(-radar[:, 1], radar[:, 0], -radar[:, 5], radar[:, 4], color="#e7298a", angles="xy",
                      scale_units="xy", scale=1, width=0.002, zorder=3)
    _bev_boxes(ax, d.boxes["gt"], d.status["gt"], GT_COLOURS)
    _bev_boxes(ax, d.boxes["pred"], d.status["pred"], PRED_COLOURS, dashed=True)
    ax.add_patch(Rectangle((-1, -2.3), 2, 4.6, color="black", zorder=5))
    notes = [f"LiDAR: {'no data (missing or unreadable)' if not present[1] else lidar_mode}",
             f"radar: {'no data (missing or unreadable)' if not present[2] else radar_mode}"]
    ax.text(0.01, 0.99, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    ax.set_xlim(-bev_range, bev_range), ax.set_ylim(-bev_range, bev_range)
    ax.set_aspect("equal")
    ax.set_xlabel("← left     metres (ego frame, forward is up)     right →", fontsize=8, labelpad=1)
    ax.tick_params(labelsize=7)
    ax.set_title("bird's-eye view", fontsize=10, pad=2)
    handles = [
        Line2D([], [], marker=".", ls="", color="#bbbbbb" if d.lidar_greyed else "#21918c",
               label="LiDAR points " + ("(not processed)" if d.lidar_greyed else "(colour: height -2..4 m)")),
        Line2D([], [], marker="D", ls="", mfc="none", color="#999999" if d.radar_greyed else "#e7298a",
               label="radar points " + ("(not processed)" if d.radar_greyed else "+ velocity")),
        Line2D([], [], color=GT_COLOURS[1], label="ground truth, detected"),
        Line2D([], [], color=GT_COLOURS[0], label="ground truth, missed"),
        Line2D([], [], color=PRED_COLOURS[1], ls="--", label=f"detection (score >= {min_score:g}), matched"),
        Line2D([], [], color=PRED_COLOURS[0], ls="--", label="detection, false positive"),
        Line2D([], [], color=GT_COLOURS[-1], label="not evaluated (range / no points)")]
    ax_legend = fig.add_subplot(gs[2, 3])
    ax_legend.axis("off")
    ax_legend.legend(handles=handles, loc="upper center", fontsize=7.5, ncol=2, frameon=False)

    ax_info = fig.add_subplot(gs[2, :3])
    ax_info.axis("off")
    faults = ", ".join(record.get("faults", ())) or "none"
    n_match = int((quality.pred_status == 1).sum())
    lines = [f"ran:          camera {cam_mode} · LiDAR {lidar_mode} · radar {radar_mode}",
             f"cost:         {record.get('gflops', float('nan')):.2f} GFLOPs (counted) · "
             f"{record.get('latency_ms', float('nan')):.0f} ms",
             f"conditions:   {', '.join(record.get('conditions', ())) or 'none'} · sensor faults: {faults}",
             f"detections:   {len(pred['boxes'])} with score >= {min_score:g}: {n_match} matched, "
             f"{quality.false_positives} false positives",
             f"ground truth: {quality.gt} evaluated: {quality.matched} detected, {quality.gt - quality.matched} missed"]
    ax_info.text(0.0, 0.95, "\n".join(lines), va="top", fontsize=9.5, family="monospace", transform=ax_info.transAxes,
                 linespacing=1.4)
    ax_gate = ax_info.inset_axes([0.72, 0.0, 0.28, 1.0]) if probs else None
    if ax_gate is not None:
        for j, s in enumerate([s for s in SENSORS if s in probs]):
            left = 0.0
            for k, m in enumerate(modes[s]):
                p = float(probs[s][k])
                chosen = m == record.get(s)
                ax_gate.barh(j, p, left=left, color=LEVEL_COLOURS[_level(s, m, modes)], edgecolor="k",
                             lw=1.8 if chosen else 0.3)
                if p > 0.12:
                    ax_gate.text(left + p / 2, j, f"{m} {p:.2f}", ha="center", va="center", fontsize=7,
                                 color="white" if _level(s, m, modes) == 2 else "black")
                left += p
        ax_gate.set_yticks(range(len(probs)), [SENSOR_TITLES[s] for s in SENSORS if s in probs], fontsize=7)
        ax_gate.set_xlim(0, 1), ax_gate.invert_yaxis()
        ax_gate.set_title("gate probabilities (chosen: thick edge)", fontsize=8, pad=2)
        ax_gate.tick_params(labelsize=7)
    else:
        ax_info.text(1.0, 0.9, "no gate probabilities in this run\n(a static configuration)", ha="right", va="top",
                     fontsize=9, color="#777777", transform=ax_info.transAxes)
    d.image = _figure_rgb(fig)
    return d


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_gif(images: list[np.ndarray], path: str | os.PathLike, width: int = 960, ms: int = 500) -> Path:
    """An animation of equally sized RGB frames, scaled to `width` pixels, looping (PIL's GIF writer)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    for im in images:
        im = Image.fromarray(im)
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        frames.append(im.quantize(colors=128, method=Image.Quantize.MEDIANCUT))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0, optimize=True)
    return path
