"""bench/pareto.py end to end on the tiny world: a gated and a static run, two budgets, three configurations, the
oracle, the table and the plot."""
from __future__ import annotations

import json

import pytest


def test_pareto_bench_end_to_end(tiny_world, tiny_run, tiny_gated_run, tmp_path, capsys):
    from bench.pareto import beats, main

    gated = tiny_gated_run
    static = tmp_path / "static"
    static.mkdir()
    (static / "checkpoints").symlink_to(tiny_run[0].parent)
    out = tmp_path / "pareto"
    table = main(["--seeds", "0", "--budgets", "0.9", "1.0", "--configs", "all high", "radar", "lidar fine",
                  "--gated-runs", str(gated), "--static-runs", str(static), "--dataroot", str(tiny_world),
                  "--out", str(out), "--limit", "2", "--num-workers", "0"])
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
    from PIL import Image
    with Image.open(out / "pareto.png") as png:  # two panels side by side, 12 x 4.8 inches at 120 dpi
        assert png.size == (1440, 576) and len(png.convert("L").getcolors(1 << 16)) > 50
    saved = json.loads((out / "pareto.json").read_text())
    assert saved["budgets"] == [0.9, 1.0] and saved["table"]["oracle"] == table["oracle"]
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
