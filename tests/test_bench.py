"""bench/: the shared flags and reuse of evaluations (common.py), static_configs.py over several checkpoints (mean,
spread, per-run choices), each bench's markdown table under its one header row, and every bench's parse_args."""
import json

import pytest

from bench.common import reusable
from bench.static_configs import mean_rows, report, seed_config
from fusion.checkpoint import file_sha256
from fusion.evaluate import Evaluation


def _metrics(nds: float, gflops: float, day: float, night: float) -> dict:
    return {"nds": nds, "map": nds / 2, "gflops_per_frame": gflops, "latency_ms": {"mean": 10 * gflops},
            "per_condition": {"day": {"nds": day}, "night": {"nds": night}}}


def test_mean_of_several_checkpoints_and_each_ones_choice():
    """Two runs that disagree on whether the camera is worth it by day: the mean decides, the spread and each run's
    own pick are printed beside it."""
    a = {"lidar+radar": _metrics(0.40, 1.66, 0.40, 0.40), "all high": _metrics(0.44, 2.10, 0.46, 0.41)}
    b = {"lidar+radar": _metrics(0.42, 1.66, 0.43, 0.41), "all high": _metrics(0.43, 2.10, 0.44, 0.42),
         "radar": _metrics(0.2, 1.49, 0.2, 0.2)}
    rows = mean_rows([a, b])
    assert sorted(rows) == ["all high", "lidar+radar"]  # only configurations every run has
    assert abs(rows["all high"]["nds"] - 0.435) < 1e-9 and abs(rows["all high"]["per_condition"]["day"]["nds"]
                                                               - 0.45) < 1e-9
    assert abs(rows["lidar+radar"]["latency_ms"]["mean"] - 16.6) < 1e-9
    text = report({"seed0": a, "seed1": b})
    assert "mean of 2 checkpoints (seed0, seed1)" in text
    spread = text.split("Spread")[1].split("\n\n")[0]
    assert "| all high           | 0.010 | 0.005 | 0.020 |   -   | 0.010 |" in spread  # no dusk frames
    per_run = text.split("per checkpoint")[1].split("\n\n")[0]
    # by day run a needs the camera (0.40 < 0.95 * 0.46), run b does not; the mean (0.415 vs 0.45) needs it
    assert "| day       | all high           | lidar+radar        |" in per_run
    assert "| day       | all high           | 0.450 | all high           | 0.450 |" in text
    assert "| night     | all high           | 0.415 | lidar+radar        | 0.405 |" in text


def test_reuse_only_metrics_written_for_the_same_checkpoint_file_and_data(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"weights")
    saved = {**_metrics(0.4, 1.6, 0.4, 0.4), "checkpoint_sha256": file_sha256(ckpt), "dataroot": "data/x",
             "version": "v1.0-synth", "split": "synth_val", "limit": None, "budget_control": 0.0,
             "sensors": {"camera": "off", "lidar": "fine", "radar": "on"}}

    def folder(name, metrics):
        (tmp_path / name).mkdir()
        for f in ("results.json", "records.jsonl"):
            (tmp_path / name / f).write_text("{}")
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
        return str(tmp_path / name)

    def ev(out, **kw):
        return Evaluation(ckpt=str(ckpt), dataroot="data/x", out=out,
                          **{"sensors": "camera=off,lidar=fine,radar=on", **kw})

    assert reusable(ev(str(tmp_path / "nothing"))) is None  # nothing written yet
    static = folder("static", saved)
    assert reusable(ev(static))["nds"] == 0.4
    assert reusable(ev(static, sensors="camera=high,lidar=fine,radar=on")) is None
    assert reusable(ev(static, limit=8)) is None
    (tmp_path / "static" / "records.jsonl").unlink()  # an evaluation that did not finish writing
    assert reusable(ev(static)) is None
    corrupted = folder("corrupted", {**saved, "corruption": "lidar_fog", "severity": 3})
    assert reusable(ev(corrupted)) is None  # a corrupted run is never taken for a clean one, nor the reverse
    assert reusable(ev(corrupted, corruption="lidar_fog", severity=3))["nds"] == 0.4
    assert reusable(ev(corrupted, corruption="lidar_fog", severity=5)) is None
    gated = folder("gated", {**saved, "sensors": "gate", "budget": 0.5, "gate_offsets": {"full": 0.0}})
    assert reusable(ev(gated, sensors=None, budget=0.5))["nds"] == 0.4  # not another budget's, nor a static one's
    assert reusable(ev(gated, sensors=None, budget=0.8)) is None
    assert reusable(ev(gated, sensors=None, budget=0.5, budget_control=1.0)) is None
    assert reusable(ev(gated)) is None
    old = folder("old", {**saved, "sensors": "gate", "budget": 0.5})  # measured without the gate's offsets
    assert reusable(ev(old, sensors=None, budget=0.5)) is None
    (tmp_path / "static" / "records.jsonl").write_text("{}")
    ckpt.write_bytes(b"other weights")  # retrained into the same path
    assert reusable(ev(static)) is None


def test_seed_runs_write_everything_in_their_own_folder():
    root, cfg = seed_config(2)
    assert root == "runs/demo-seed2" and cfg["seed_everything"] == 2
    assert cfg["trainer"]["default_root_dir"] == "runs/demo-seed2" and "runs/demo" not in str(cfg).replace(
        "runs/demo-seed2", "")
    assert seed_config(0)[0] == "runs/demo" and seed_config(0)[1]["seed_everything"] == 0


BENCHES = ("static_configs", "pareto", "oracle", "robustness", "pipeline", "generate", "render_geometry")


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_parses_its_flags_with_parse_args(name, tmp_path):
    """parse_args(argv) of each bench: the shared data flags where the bench reads data; --markdown where its table
    is quoted by the docs; an unknown flag is refused."""
    import importlib

    bench = importlib.import_module(f"bench.{name}")
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"weights")
    argv = {"oracle": ["--ckpt", str(ckpt)], "robustness": ["--ckpt", str(ckpt)]}.get(name, [])
    args = bench.parse_args(argv)
    if name != "generate":
        assert args.dataroot == "data/synth-demo" and args.version == "v1.0-synth"
    if name in ("static_configs", "pareto", "oracle", "robustness", "pipeline"):
        assert bench.parse_args(argv + ["--markdown", "t.md"]).markdown == "t.md"
    with pytest.raises(SystemExit):
        bench.parse_args(argv + ["--no-such-flag"])


def _table_header(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("|"))


def test_each_quoted_table_is_written_under_its_one_header(tmp_path):
    """The tables the docs quote, as the benches write them with --markdown: their first table row is the header
    the bench defines once (a docs test compares the quoted tables with it)."""
    import argparse

    from bench import oracle, pareto, pipeline, robustness, static_configs
    from bench.common import write_markdown

    rows = {"all high": _metrics(0.44, 2.10, 0.46, 0.41), "radar": _metrics(0.2, 1.49, 0.2, 0.2)}
    assert _table_header(static_configs.main_table({"a": rows})) == static_configs.HEADER
    assert _table_header(static_configs.main_table({"a": rows, "b": rows})) == static_configs.HEADER
    r = {k: 0.5 for k in ("nds", "nds_spread", "map", "cost", "cost_p95", "gflops", "ms")}
    table = {"gated": {0.5: r}, "oracle": r, "static (gated model, gate overridden)": {"all high": r},
             "static (static recipe)": {}}
    lines = pareto.main_table(table, argparse.Namespace(seeds=[0], split="synth_val", dataroot="d"))
    assert lines[1] == pareto.HEADER and len(lines) == 6 and lines[-1].startswith("| gated, overridden        | all")
    text = pipeline.table_text([("index cache, warm", "0.059 s", ""), ("one frame", "5 lidar pts", "1 radar pts")])
    assert text.splitlines() == ["| what | measured |", "|---|---|", "| index cache, warm | 0.059 s |",
                                 "| one frame | 5 lidar pts (1 radar pts) |"]
    assert _table_header(text) == "| " + " | ".join(pipeline.HEADER) + " |"
    clean = {"nds": 0.5, "budget": None, "cost_per_frame": {"mean": 1.0}}
    results = {("runs/a/checkpoints/last.ckpt", "full"): {
        "clean": clean, "runs": {("lidar_fog", 3): {"nds": 0.25, "cost_per_frame": {"mean": 1.0}}},
        "summary": robustness.summarize(clean, {("lidar_fog", 3): {"nds": 0.25}})}}
    summary = robustness.format_summary(results)
    assert _table_header(summary) == "| " + " | ".join(robustness.SUMMARY_HEADER) + " | a full |"
    assert "| lidar_fog | lidar | 0.500 |" in summary
    group = {"frames": 2, "full_gflops_per_frame": {"mean": 2.0}, "gflops_per_frame": {"mean": 1.0},
             "full_latency_ms": {"mean": 20.0}, "latency_ms": {"mean": 10.0}}
    m = {"configs": ["a", "b"], "split": "synth_val", "frames": 2, "score_threshold": 0.3, "max_dist": 2.0,
         "nds": 0.4, "per_condition": {}, "full": {"config": "a", "nds": 0.5, "per_condition": {}},
         "per_group": {"overall": group}}
    text = oracle.group_table(m)
    assert _table_header(text).endswith(" | ".join(oracle.HEADER) + " |")
    assert text.splitlines()[-1] == ("| overall |    2 |    0.500 |      0.400 |        2.00 |          1.00 |    20.0 "
                                     "|      10.0 |")
    write_markdown(tmp_path / "md" / "t.md", text)
    assert (tmp_path / "md" / "t.md").read_text() == text + "\n"


def test_robustness_summary_prints_the_gates_finite_ra_and_cost():
    """The cross-run table's cell of a gated run: RA = NDS under the corruption / clean NDS, a finite number, then
    its mean cost; a clean NDS of 0 gives no finite RA, and the cell says nan (the pattern refuses it)."""
    import re

    from bench.robustness import format_summary, summarize

    def cell(clean_nds):
        clean = {"nds": clean_nds, "budget": 0.5, "cost_per_frame": {"mean": 0.5}}
        runs = {("camera_dark", 5): {"nds": 0.3, "cost_per_frame": {"mean": 0.42}}}
        results = {("runs/g/checkpoints/last.ckpt", "gate, budget 0.5"): {
            "clean": clean, "runs": runs, "summary": summarize(clean, runs)}}
        return next(r for r in format_summary(results).splitlines() if r.startswith("| camera_dark |"))

    finite = re.compile(r"\| \d\.\d{3} \(\d\.\d{2}\) \|$")
    assert cell(0.6).endswith("| 0.500 (0.42) |") and finite.search(cell(0.6))
    assert cell(0.0).endswith("| nan (0.42) |") and not finite.search(cell(0.0))
