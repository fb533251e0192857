"""Shared pytest fixtures: `tiny_world`, a tiny synthetic nuScenes-format world generated once per session,
`tiny_run`, one training step of configs/tiny.yaml on it, and `tiny_gated_run`, two steps of it with the gate."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Dataroot of a world generated with PRESETS["tiny"] (version v1.0-synth, splits synth_train/synth_val)."""
    from datasets.synthetic import PRESETS, generate

    root = tmp_path_factory.mktemp("tiny_world") / "synth-tiny"
    generate(root, PRESETS["tiny"], workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_world, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, index cache dir) of one training step of train.py on configs/tiny.yaml over the tiny world, the
    run under a temporary folder."""
    import train

    tmp = tmp_path_factory.mktemp("tiny_run")
    train.main(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.dataroot", str(tiny_world),
                "--data.cache_dir", str(tmp / "cache"), "--trainer.max_steps", "1",
                "--trainer.default_root_dir", str(tmp / "run")])
    return tmp / "run" / "checkpoints" / "last.ckpt", tmp / "cache"


@pytest.fixture(scope="session")
def tiny_gated_run(tiny_world, tiny_run, tmp_path_factory) -> Path:
    """Run folder (checkpoints/last.ckpt) of two training steps of configs/tiny.yaml with the gate, as the gated
    configs set it (own glimpses), on the tiny world (its latency table measured at set-up, as for a config without
    one)."""
    import train

    run = tmp_path_factory.mktemp("tiny_gated_run") / "run"
    train.main(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.dataroot", str(tiny_world),
                "--data.cache_dir", str(tiny_run[1]), "--trainer.max_steps", "2", "--trainer.default_root_dir",
                str(run), "--model.gate", "true", "--model.gate_start", "0.0", "--model.gate_own_glimpse", "true"])
    return run


@pytest.fixture(scope="session")
def tiny_gate_budget(tiny_gated_run) -> float:
    """A budget the tiny gated model can meet: the middle one of its stored operating points. Its latency table is
    measured at set-up, so the cheapest configuration's share of full (the lowest budget it can meet) moves with the
    machine's load; a fixed budget such as 0.6 can fall below it."""
    from fusion.operating_points import stored

    points = stored(tiny_gated_run / "checkpoints" / "last.ckpt")
    return points.budgets[len(points.budgets) // 2]
