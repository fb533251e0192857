"""The 3D view of a frame with open3d: LiDAR and radar points, the ego car, ground-truth and predicted boxes in the
panels' colours, rendered off-screen (EGL where no display exists) or in a window (render_3d -> View3D).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from PIL import Image, ImageDraw

from report.figures import GT_COLOURS, PRED_COLOURS
from report.run import FrameQuality
from sensors.frame import Frame


@dataclass
class View3D:
    """What the 3D view drew: point counts, box counts per kind ({"gt": K, "pred": P}), the image (H, W, 3)."""

    lidar_points: int
    radar_points: int
    boxes: dict[str, int]
    image: np.ndarray | None = None
    path: Path | None = None


def _geometries(frame: Frame, record: dict, pred: dict[str, np.ndarray], quality: FrameQuality):
    import matplotlib
    import open3d as o3d

    geoms = []
    lidar = frame.lidar.points.numpy().astype(np.float64)
    if len(lidar):
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(lidar[:, :3]))
        if record.get("lidar", "off") == "off":
            colours = np.full((len(lidar), 3), 0.55)
        else:
            colours = matplotlib.colormaps["viridis"](np.clip((lidar[:, 2] + 2) / 6, 0, 1))[:, :3]
        pc.colors = o3d.utility.Vector3dVector(colours)
        geoms.append(pc)
    radar = frame.radar.points.numpy().astype(np.float64)
    for p in radar:
        s = o3d.geometry.TriangleMesh.create_sphere(0.35, resolution=6)
        s.translate(p[:3])
        s.paint_uniform_color([0.6, 0.6, 0.6] if record.get("radar", "off") == "off" else [0.91, 0.16, 0.54])
        geoms.append(s)
    ego = o3d.geometry.TriangleMesh.create_box(4.6, 2.0, 1.6).translate([-2.3, -1.0, 0.0])
    ego.paint_uniform_color([0.95, 0.95, 0.95])
    geoms += [ego, o3d.geometry.TriangleMesh.create_coordinate_frame(size=4.0, origin=[0, 0, 1.8])]
    for boxes, status, colours in ((frame.gt.boxes.double().numpy(), quality.gt_status, GT_COLOURS),
                                   (pred["boxes"], quality.pred_status, PRED_COLOURS)):
        for b, st in zip(boxes, status):
            R = o3d.geometry.get_rotation_matrix_from_xyz([0, 0, b[6]])
            obb = o3d.geometry.OrientedBoundingBox(b[:3], R, b[3:6])
            obb.color = to_rgb(colours[int(st)])  # the constructor leaves it uninitialised; the line set copies it
            geoms.append(o3d.geometry.LineSet.create_from_oriented_bounding_box(obb))
    return geoms


def render_3d(frame: Frame, record: dict, pred: dict[str, np.ndarray], quality: FrameQuality, title: str,
              size: tuple[int, int] = (1280, 720), interactive: bool = False) -> View3D:
    """LiDAR points (coloured by height; grey where the branch did not run), radar points (pink spheres; grey where
    off), ground-truth and predicted boxes in the colours of the panels, seen from behind and above the ego car.
    Rendered off-screen with open3d's legacy Visualizer (EGL where no display exists); `interactive` opens a window
    instead (needs a display)."""
    import open3d as o3d

    geoms = _geometries(frame, record, pred, quality)
    view = View3D(len(frame.lidar.points), len(frame.radar.points),
                  {"gt": len(frame.gt.boxes), "pred": len(pred["boxes"])})
    if interactive:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise ValueError("--interactive needs a display (DISPLAY or WAYLAND_DISPLAY is not set)")
        o3d.visualization.draw_geometries(geoms, window_name=title, width=size[0], height=size[1])
        return view
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(window_name=title, width=size[0], height=size[1], visible=False):
        raise RuntimeError("open3d could not create an off-screen window (no EGL?)")
    try:
        for g in geoms:
            vis.add_geometry(g)
        opt = vis.get_render_option()
        opt.background_color = np.array([0.08, 0.08, 0.1])
        opt.point_size = 1.5
        ctl = vis.get_view_control()
        ctl.set_lookat([12.0, 0.0, 0.0]), ctl.set_front([-0.75, 0.0, 0.66]), ctl.set_up([0.66, 0.0, 0.75])
        ctl.set_zoom(0.28)
        vis.poll_events(), vis.update_renderer()
        image = np.asarray(vis.capture_screen_float_buffer(do_render=True))
    finally:
        vis.destroy_window()
    im = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    draw.text((12, 10), title, fill="white", font_size=18)
    legend = [("ground truth, detected", GT_COLOURS[1]), ("ground truth, missed", GT_COLOURS[0]),
              ("detection, matched", PRED_COLOURS[1]), ("detection, false positive", PRED_COLOURS[0]),
              ("radar point", "#e7298a" if record.get("radar", "off") != "off" else "#999999"),
              ("not evaluated (range / no points)", GT_COLOURS[-1]),
              ("ego car (white); axes: x forward red, y left green", "#ffffff"),
              ("LiDAR: colour = height" if record.get("lidar", "off") != "off" else "LiDAR: not processed (grey)",
               "#21918c" if record.get("lidar", "off") != "off" else "#999999")]
    for k, (text, colour) in enumerate(legend):
        y = im.height - 26 * (len(legend) - k) - 6
        draw.rectangle((12, y + 4, 30, y + 18), fill=colour)
        draw.text((38, y), text, fill="white", font_size=16)
    view.image = np.asarray(im)
    return view
