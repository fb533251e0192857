"""Shared pytest fixtures: `tiny_world`, a tiny synthetic nuScenes-format world generated once per session."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Dataroot of a world generated with PRESETS["tiny"] (version v1.0-synth, splits synth_train/synth_val)."""
    from datasets.synthetic import PRESETS, generate

    root = tmp_path_factory.mktemp("tiny_world") / "synth-tiny"
    generate(root, PRESETS["tiny"], workers=1)
    return root
