"""Pictures of an evaluation run: what each frame ran, what it cost, what it detected and under which conditions.

Reads an eval.py output folder (metrics.json, results.json, records.jsonl) and the dataroot (through
`NuScenesDataset`), and draws a timeline per scene, a panel per frame, a GIF per scene, a 3D view of a frame (open3d,
rendered headless through EGL) and one self-contained HTML report. Every drawing function returns what it drew (a
small dataclass: rows, boxes, dimmed cameras) so that tests check a picture's content, not only that a file exists.

Per-frame detection quality follows the devkit's matching at its loosest threshold, 2 m: per class, detections in
descending score take the nearest unmatched ground-truth box whose centre is within 2 m in x-y; boxes beyond the
class's evaluation range (detection_cvpr_2019) and ground truth without a LiDAR or radar point are left out, as the
devkit filters them. Only detections with score >= a threshold count (AP integrates over all scores; one frame's

The package's files:
  run.py      reading an eval.py run (Run, load_run, ego_detections, gate_probabilities) and per-frame detection
              quality (FrameQuality, class_ranges, match_frame)
  figures.py  the matplotlib drawings: colours, a scene's timeline, a frame's panel, PNG and GIF saving
  view3d.py   the open3d 3D view of a frame (View3D, render_3d)
  page.py     the self-contained HTML report (data_uri, tables, pareto_figure, write_report)
"""
from datasets.report.figures import PanelDrawing, TimelineDrawing, draw_panel, draw_timeline, save_gif, save_png
from datasets.report.page import write_report
from datasets.report.run import (FrameQuality, Run, class_ranges, ego_detections, gate_probabilities, load_run,
                                 match_frame)
from datasets.report.view3d import View3D, render_3d

__all__ = ["FrameQuality", "PanelDrawing", "Run", "TimelineDrawing", "View3D", "class_ranges", "draw_panel",
           "draw_timeline", "ego_detections", "gate_probabilities", "load_run", "match_frame", "render_3d",
           "save_gif", "save_png", "write_report"]
