"""bench/pareto.py end to end on the tiny world: a gated and a static run, two budgets, three configurations, the
oracle, the table and the plot."""
from __future__ import annotations

import json

import pytest


def test_pareto_bench_end_to_end(tiny_world, tiny_run, tiny_gated_run, tmp_path, capsys):
    from bench.common import frontier_at, upper_hull
    from bench.pareto import beats, main

    gated = tiny_gated_run
    static = tmp_path / "static"
    static.mkdir()
    (static / "checkpoints").symlink_to(tiny_run[0].parent)
    out = tmp_path / "pareto"
    table = main(["--seeds", "0", "--budgets", "0.9", "1.0", "--configs", "all high", "radar", "lidar fine",
                  "--gated-runs", str(gated), "--static-runs", str(static), "--dataroot", str(tiny_world),
                  "--out", str(out), "--limit", "2", "--num-workers", "0", "--timing-frames", "2"])
    text = capsys.readouterr().out
    assert set(table["gated"]) == {0.9, 1.0} and set(table["static (static recipe)"]) == {"all high", "radar",
                                                                                           "lidar fine"}
    assert table["gated"][1.0]["cost"] >= table["gated"][0.9]["cost"] - 1e-9
    # each row's cost is the mean over its frames of what the evaluation (records.jsonl) or the oracle
    # (choices.jsonl) says each frame cost; one seed, so no spread
    folder = out / gated.name

    def mean_cost(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == 2
        return sum(r["cost"] for r in rows) / len(rows)
    assert table["gated"][0.9]["cost"] == pytest.approx(mean_cost(folder / "budget-0.9" / "records.jsonl"))
    assert table["oracle"]["cost"] == pytest.approx(mean_cost(folder / "oracle" / "choices.jsonl"))
    assert table["oracle"]["cost"] < table["static (gated model, gate overridden)"]["all high"]["cost"] == 1.0
    assert table["oracle"]["nds_spread"] == 0.0 and "ground truth" in text and "what the gate" in text
    # every configuration of either model, the gate at each budget and the oracle timed interleaved, in ms > 0
    timed = table["interleaved_ms"]
    assert set(timed) == {"all high", "radar", "lidar fine", "gate, budget 0.9", "gate, budget 1.0", "oracle"}
    assert all(r["ms"] > 0 for r in timed.values()) and "ms interleaved" in text
    # the gate's margin over the frontier of the same model's static configurations, printed per budget
    assert "frontier NDS" in text and "| 0.9    |" in text and "one seed: no spread to judge" in text
    from PIL import Image
    with Image.open(out / "pareto.png") as png:  # two panels side by side, 12 x 4.8 inches at 120 dpi
        assert png.size == (1440, 576) and len(png.convert("L").getcolors(1 << 16)) > 50
    saved = json.loads((out / "pareto.json").read_text())
    assert saved["budgets"] == [0.9, 1.0] and saved["table"]["oracle"] == table["oracle"]
    statics = table["static (gated model, gate overridden)"]
    hull = upper_hull({n: (r["cost"], r["nds"]) for n, r in statics.items()})
    for b in ("0.9", "1.0"):
        (seed0,) = saved["frontier"][b]
        assert seed0["frontier_nds"] == pytest.approx(frontier_at(hull, table["gated"][float(b)]["cost"])[0])
        assert seed0["margin"] == pytest.approx(table["gated"][float(b)]["nds"] - seed0["frontier_nds"])
    # two recipes side by side (here the same run twice): full fusion and each budget per recipe
    lines = main(["--compare", str(out / "pareto.json"), str(out / "pareto.json")])["lines"]
    assert len(lines) == 2 + 2 * 3 and lines[2].split("|")[2].strip() == "full fusion"
    assert lines[3].split("|")[5].strip() == f"{table['gated'][0.9]['cost']:.3f}"
    other = json.loads((out / "pareto.json").read_text())
    other["seeds"] = [0, 1]
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="differ in seeds"):
        main(["--compare", str(out / "pareto.json"), str(tmp_path / "other.json")])
    rows = {"a": {"nds": 0.5, "nds_spread": 0.02, "cost": 0.4}, "b": {"nds": 0.3, "nds_spread": 0.01, "cost": 0.2},
            "c": {"nds": 0.6, "nds_spread": 0.01, "cost": 0.9}}
    assert [r[0] for r in beats({"nds": 0.45, "nds_spread": 0.01, "cost": 0.5}, rows)] == ["a", "b"]


def test_the_bench_names_every_configuration_the_gate_chooses_among():
    from bench.common import CONFIGS
    from bench.static_configs import TABLE
    from fusion.gate import configurations
    from fusion.detector import SensorConfig

    assert sorted(str(SensorConfig.parse(s)) for s in CONFIGS.values()) == sorted(map(str, configurations()))
    assert len(set(CONFIGS.values())) == len(CONFIGS) and set(TABLE) <= set(CONFIGS)


def test_the_static_frontier_is_the_upper_hull_up_to_the_best_point():
    """Mixing two configurations frame by frame: the frontier joins the points no mix of two others beats, from the
    cheapest up to the best NDS, flat after it, undefined below the cheapest."""
    import math

    from bench.common import frontier_at, frontier_margins, upper_hull

    points = {"a": (0.2, 0.3), "b": (0.4, 0.5), "c": (0.9, 0.6), "below": (0.5, 0.35), "on b-c": (0.65, 0.55),
              "after best": (1.0, 0.55), "same cost as a, worse": (0.2, 0.1)}
    hull = upper_hull(points)
    assert [h[2] for h in hull] == ["a", "b", "c"]
    assert frontier_at(hull, 0.3) == (pytest.approx(0.4), "a + b")
    assert frontier_at(hull, 0.4) == (pytest.approx(0.5), "b")
    assert frontier_at(hull, 1.0) == (0.6, "c")
    assert math.isnan(frontier_at(hull, 0.1)[0])
    assert upper_hull({"only": (1.0, 0.5)}) == [(1.0, 0.5, "only")]
    rows = {n: {"cost": c, "nds": v} for n, (c, v) in points.items()}
    m = frontier_margins({0.35: {"cost": 0.3, "nds": 0.45}}, rows)[0.35]
    assert m["margin"] == pytest.approx(0.05) and m["mix"] == "a + b"
