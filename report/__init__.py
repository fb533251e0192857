"""Pictures of an evaluation run: what each frame ran, what it cost, what it detected and under which conditions.

Reads an eval.py output folder (metrics.json, results.json, records.jsonl) and the dataroot (through
`NuScenesDataset`), and draws a timeline per scene, a panel per frame, a GIF per scene, a 3D view of a frame (open3d,
rendered headless through EGL) and one self-contained HTML report. Every drawing function returns what it drew (a
small dataclass: rows, boxes, dimmed cameras) so that tests check a picture's content, not only that a file exists.

Per-frame detection quality (run.py's match_frame) follows the devkit's matching at its loosest threshold, 2 m.

The package's files (import from them; this file imports nothing, so importing the package costs nothing):
  run.py      reading an eval.py run (Run, load_run, ego_detections, gate_probabilities) and per-frame detection
              quality (FrameQuality, class_ranges, match_frame)
  figures.py  the matplotlib drawings: colours, a scene's timeline, a frame's panel, PNG and GIF saving
  view3d.py   the open3d 3D view of a frame (View3D, render_3d)
  page.py     the self-contained HTML report (data_uri, tables, pareto_figure, write_report)
"""
