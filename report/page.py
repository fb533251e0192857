"""The HTML report of a run: one self-contained file (images as base64 data URIs, no script, no external
reference) with the settings, the metrics tables, the pareto plot, the timelines, sample panels, an animation and
a 3D view (write_report), and its pieces (data_uri, the tables, pareto_figure).
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from report.figures import SENSOR_TITLES, _figure_rgb, _level
from report.run import Run
from sensors.names import SENSORS


def data_uri(path_or_image, fmt: str | None = None, quality: int = 82) -> str:
    """A file or an RGB array as a base64 data URI (arrays as JPEG, or as a 64-colour PNG with fmt="PNG"), for a
    report without any external reference."""
    if isinstance(path_or_image, np.ndarray):
        buf, fmt, im = io.BytesIO(), fmt or "JPEG", Image.fromarray(path_or_image)
        if fmt == "PNG":  # plots: 64 colours keep them sharp at a third of the size
            im = im.quantize(colors=64, method=Image.Quantize.FASTOCTREE)
        im.save(buf, format=fmt, quality=quality)
        data, mime = buf.getvalue(), f"image/{fmt.lower()}"
    else:
        p = Path(path_or_image)
        data = p.read_bytes()
        mime = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".svg": "image/svg+xml"}[p.suffix.lower()]
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f"{v:.3f}" if isinstance(v, float) else str(v)
        return f'<span class="t">{html.escape(str(v))}</span>' if v != "" else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


TP_ERRORS = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")


def _mode_rows(records: list[dict], modes: dict[str, tuple[str, ...]]) -> list[list]:
    """Per sensor: the share of the frames that ran each of its modes ("fine 75%"), and the frames with a fault."""
    rows = []
    for s in SENSORS:
        values = [r.get(s, "off") for r in records]
        cells = [""] * 3
        for m in modes[s]:
            cells[_level(s, m, modes)] = f"{m} {100 * values.count(m) / max(len(values), 1):.0f}%"
        rows.append([SENSOR_TITLES[s], *cells, sum(s in r.get("faults", ()) for r in records)])
    return rows


def _summary_rows(tree: dict, prefix: str = "") -> list[list]:
    """Rows of name, frames, NDS, mAP and TP errors for every summary (a dict with "nds") in a nested dict."""
    rows = []
    for name, s in tree.items():
        label = f"{prefix}{name}"
        if isinstance(s, dict) and "nds" in s:
            rows.append([label, s.get("frames", ""), s["nds"], s["map"], *(s.get("tp_errors", {}).get(k, "")
                                                                           for k in TP_ERRORS)])
        elif isinstance(s, dict):
            rows.extend(_summary_rows(s, label + " / "))
        elif s is None:
            rows.append([label, 0, "", "", *[""] * len(TP_ERRORS)])
    return rows


def pareto_figure(points: list[dict]) -> np.ndarray:
    """NDS against GFLOPs of a list of {"name", "gflops", "nds"} (configurations of one detector), the
    non-dominated ones joined."""
    fig = Figure(figsize=(7, 4.2), dpi=90)
    ax = fig.add_subplot()
    pts = sorted(points, key=lambda p: (p["gflops"], -p["nds"]))
    front, best = [], -np.inf
    for p in pts:
        if p["nds"] > best:
            front.append(p)
            best = p["nds"]
    ax.scatter([p["gflops"] for p in pts], [p["nds"] for p in pts], color="#6baed6", zorder=2)
    ax.plot([p["gflops"] for p in front], [p["nds"] for p in front], "o-", color="#08519c", zorder=3,
            label="pareto front (cheapest for its NDS)")
    for p in pts:
        ax.annotate(p.get("name", ""), (p["gflops"], p["nds"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("GFLOPs per frame"), ax.set_ylabel("NDS"), ax.legend(fontsize=8), ax.grid(alpha=0.3)
    ax.set_title("accuracy against cost")
    fig.tight_layout()
    return _figure_rgb(fig)


def write_report(path: str | os.PathLike, run: Run, modes: dict[str, tuple[str, ...]],
                 timelines: list[tuple[str, np.ndarray]], panels: list[tuple[str, np.ndarray]],
                 animation: tuple[str, Path] | None = None,
                 view3d: tuple[str, np.ndarray] | None = None, notes: list[str] = ()) -> Path:
    """One HTML file with everything inline (images as base64 data URIs, no script, no external reference):
    the run's settings and metrics (overall, per condition, per corruption where present), the pareto plot where
    present (metrics["pareto"] as [{"name", "gflops", "nds"}], or pareto*.png in the run folder), a timeline per
    scene, sample panels, an animation and a 3D view."""
    m = run.metrics
    title = f"gatefusion evaluation report: {run.path.resolve().name}"
    lat = m.get("latency_ms", {})
    overview = [["frames", m.get("frames", len(run.records))], ["dataroot", m.get("dataroot", "")],
                ["version / split", f"{m.get('version', '')} / {m.get('split', '')}"],
                ["sensors (eval.py --sensors, else the checkpoint's; or the gate at a budget)",
                 f"gate, budget {m.get('budget')}" if not isinstance(m.get("sensors", {}), dict) else
                 ", ".join(f"{k}={v}" for k, v in m.get("sensors", {}).items())],
                ["checkpoint", m.get("checkpoint", "")], ["device", m.get("device", "")],
                ["NDS", m.get("nds", "")], ["mAP", m.get("map", "")],
                ["GFLOPs per frame (torch FLOP counter)", m.get("gflops_per_frame", "")],
                ["latency ms: mean / p50 / p95", " / ".join(f"{lat[k]:.1f}" for k in ("mean", "p50", "p95")
                                                           if k in lat)],
                ["frames per second", lat.get("fps", "")]]
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>Run folder <code>{html.escape(str(run.path))}</code>. Metrics are the nuScenes devkit's "
             "DetectionEval (detection_cvpr_2019); GFLOPs are counted by torch's FLOP counter (convolutions, linear "
             "layers, matmuls); latency is measured on the device named below.</p>",
             "<h2>Overall</h2>", _table(["", "value"], overview)]
    if m.get("tp_errors"):
        parts += ["<h3>True-positive errors</h3>", _table(list(m["tp_errors"]), [list(m["tp_errors"].values())])]
    if m.get("per_class_ap"):
        parts += ["<h3>AP per class</h3>", _table(list(m["per_class_ap"]), [list(m["per_class_ap"].values())])]
    parts += ["<h3>What ran (from records.jsonl)</h3>", _table(
        ["sensor", "off", "low / coarse", "high / fine / on", "frames with a fault"], _mode_rows(run.records, modes))]
    gflops = [r["gflops"] for r in run.records if "gflops" in r]
    gated = sum(1 for r in run.records if r.get("gate_probs"))
    parts.append(f"<p>{len(run.records)} frames; mean GFLOPs per frame (counted on each frame) {np.mean(gflops):.3f}; "
                 f"{gated} frames with gate probabilities"
                 f"{'' if gated else ' (a static configuration: no gate chose)'}.</p>" if gflops else "")
    header = ["subset", "frames", "NDS", "mAP", *TP_ERRORS]
    if m.get("per_condition"):
        parts += ["<h2>Per condition</h2>", _table(header, _summary_rows(m["per_condition"]))]
    if m.get("per_corruption"):
        parts += ["<h2>Per corruption</h2>", _table(header, _summary_rows(m["per_corruption"]))]
    pareto = ([pareto_figure(m["pareto"])] if m.get("pareto") else []) + sorted(run.path.glob("pareto*.png"))
    if pareto:
        parts.append("<h2>Accuracy against cost</h2>")
        parts += [f'<img alt="pareto plot" src="{data_uri(p, "PNG")}">' for p in pareto]
    parts.append("<h2>Timelines, one per scene</h2><p>Which mode each sensor ran in each key frame, its counted "
                 "cost and measured latency, and how many ground-truth boxes the detections matched. Shaded red: "
                 "frames with a sensor fault in the data.</p>")
    parts += [f'<h3>{html.escape(n)}</h3><img alt="timeline of {html.escape(n)}" src="{data_uri(im, "PNG")}">'
              for n, im in timelines]
    if panels:
        parts.append("<h2>Sample frames</h2>")
        parts += [f'<h3>{html.escape(n)}</h3><img alt="panel {html.escape(n)}" src="{data_uri(im)}">'
                  for n, im in panels]
    if animation:
        parts += [f"<h2>Animation: {html.escape(animation[0])}</h2>",
                  f'<img alt="animation of {html.escape(animation[0])}" src="{data_uri(animation[1])}">']
    if view3d:
        parts += [f"<h2>3D view: {html.escape(view3d[0])}</h2>", f'<img alt="3D view" src="{data_uri(view3d[1])}">']
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    style = ("body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:2px 8px;"
             "font-size:13px;text-align:right}th{background:#f3f3f3}td:first-child,td:has(.t){text-align:left}"
             "img{max-width:100%;border:1px solid #ddd;margin:.3em 0}code{background:#f3f3f3}")
    doc = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    return path
