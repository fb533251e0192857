"""fusion/cost.py's command line: GFLOPs and measured ms per branch, mode and static configuration of a config."""
from __future__ import annotations

import re
from pathlib import Path

from fusion.cost import (MIXED_VIEWS, SHARED, branch_gflops, config_cost, detector_from_config, main, read_config,
                         static_configs, synthetic_frame)
from sensors.names import MODES, SENSORS

REPO = Path(__file__).resolve().parents[1]


def test_static_configs_are_every_nonempty_choice_full_first():
    configs = static_configs()
    assert len(configs) == len(set(configs)) == 3 * 3 * 2 - 1
    assert str(configs[0]) == "camera=high,lidar=fine,radar=on"


def test_cost_command_prints_every_branch_and_configuration():
    report = main(["--config", str(REPO / "configs" / "tiny.yaml"), "--repeats", "1", "--lidar-points", "2000",
                   "--radar-points", "50"])
    main_part, below = report.split("below the sensor")
    rows = [r for r in main_part.splitlines() if r.startswith("| ") and not r.startswith("| branch")
            and not r.startswith("| configuration")]
    assert len(rows) == sum(len(MODES[s]) - 1 for s in SENSORS) + 2 + len(static_configs())  # + shared, gate
    # below the sensor: every part of FineCosts, then each sampled mix of views modelled beside measured
    assert "| camera high, per view " in below and "| lidar fine, per tile (4x4, halo 8) " in below
    assert sum(r.startswith("| ") and r[2] in "hlo" and r[3] == " " for r in below.splitlines()) == len(MIXED_VIEWS)
    assert re.search(r"^gate_costs: \{camera=low: [0-9.]+, .*shared: [0-9.]+\}$", report, re.M)
    detector, image_size = detector_from_config(str(REPO / "configs" / "tiny.yaml"))
    assert image_size == (160, 90) and detector.grid.cell == 3.2
    table = branch_gflops(detector, synthetic_frame(detector.grid, image_size, 2000, 50))
    full = config_cost(table, static_configs()[0])
    assert f"{full:.3f} GFLOPs" in report and f"| shared | on     | {table[SHARED]:6.3f} |" in report



def test_overlays_apply_in_order(tmp_path):
    """--config base --config overlay: the overlay's keys win, as train.py applies them."""
    overlay = tmp_path / "coarse.yaml"
    overlay.write_text("model:\n  bev_cell: 6.4\ndata:\n  image_size: [80, 45]\n")
    detector, image_size = detector_from_config(str(REPO / "configs" / "tiny.yaml"), str(overlay))
    assert detector.grid.cell == 6.4 and image_size == (80, 45)
    model, _ = read_config(str(REPO / "configs" / "nuscenes-mini.yaml"), str(REPO / "configs" / "gate.yaml"))
    assert model["gate_own_glimpse"] is True and model["lidar_channels"] == 64
