"""The gate's operating points stored in the checkpoint (fusion/operating_points.py): train.py writes them, eval.py
--budget runs from them on a dataroot without the training split, and they equal a recalibration on that split."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from fusion.gate import configurations
from fusion.operating_points import CHECKPOINT_KEY, OperatingPoints, store, stored


def points(**kw) -> OperatingPoints:
    d = dict(budgets=[0.4, 0.6, 0.8], prices=[3.0, 1.0, 0.0], offsets=[0.0] * len(configurations()),
             split="train", calibration_frames=10, offset_frames=5)
    return OperatingPoints(**{**d, **kw})


def test_price_is_stored_on_the_grid_linear_between_and_refused_outside():
    p = points()
    assert p.price(0.4) == 3.0 and p.price(0.6) == 1.0 and p.price(0.8) == 0.0
    assert p.price(0.5) == pytest.approx(2.0) and p.price(0.7) == pytest.approx(0.5)
    for outside in (0.3, 0.9):
        with pytest.raises(ValueError, match="--calibrate-on"):
            p.price(outside)


def test_a_bad_stored_dict_names_the_checkpoint(tmp_path):
    good = points().__dict__
    assert OperatingPoints.from_dict(good, "c.ckpt") == points()
    for bad in ({**good, "prices": [1.0]}, {**good, "budgets": [0.8, 0.6, 0.4]}, {**good, "offsets": [0.0]},
                {k: v for k, v in good.items() if k != "split"}):
        with pytest.raises(ValueError, match="c.ckpt"):
            OperatingPoints.from_dict(bad, "c.ckpt")


def test_store_keeps_the_checkpoint_and_adds_the_points(tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"detector.w": torch.ones(2)}, "hyper_parameters": {}}, path)
    assert stored(path) is None
    store(path, points())
    ckpt = torch.load(path, weights_only=True)
    assert torch.equal(ckpt["state_dict"]["detector.w"], torch.ones(2)) and CHECKPOINT_KEY in ckpt
    assert stored(path) == points()
    assert not list(tmp_path.glob("*.tmp"))


def without_training_split(world, dest):
    """A copy of the tiny world whose splits.json names only synth_val (as a v1.0-mini dataroot names no
    synth_train)."""
    shutil.copytree(world, dest)
    splits = dest / "v1.0-synth" / "splits.json"
    splits.write_text(json.dumps({"synth_val": json.loads(splits.read_text())["synth_val"]}))
    return dest


def test_eval_at_a_budget_needs_no_training_split_and_matches_a_recalibration(tiny_gated_run, tiny_world, tmp_path):
    from fusion.evaluate import Evaluation, evaluate

    ckpt = tiny_gated_run / "checkpoints" / "last.ckpt"
    p = stored(ckpt)
    assert p is not None and p.split == "synth_train" and len(p.offsets) == len(configurations())
    assert all(map(math.isfinite, p.prices)) and any(o != 0.0 for o in p.offsets)
    budget = p.budgets[len(p.budgets) // 2]
    other = without_training_split(tiny_world, tmp_path / "mini-like")
    common = dict(ckpt=str(ckpt), version="v1.0-synth", split="synth_val", budget=budget, limit=3, num_workers=0,
                  measure_frames=0, per_condition=False)
    served = evaluate(Evaluation(dataroot=str(other), out=str(tmp_path / "a"), **common))
    assert served["operating_point"] == "checkpoint (synth_train)"
    assert served["price"] == p.price(budget)
    assert list(served["gate_offsets"].values()) == pytest.approx(p.offsets)
    with pytest.raises(ValueError, match="synth_train"):
        evaluate(Evaluation(dataroot=str(other), out=str(tmp_path / "b"), calibrate_on="synth_train", **common))
    again = evaluate(Evaluation(dataroot=str(tiny_world), out=str(tmp_path / "c"), calibrate_on="synth_train",
                                calibration_frames=p.calibration_frames, gate_offsets=p.offset_frames, **common))
    assert again["operating_point"] == "calibrated (synth_train)"
    with pytest.raises(ValueError, match="--calibrate-on"):  # outside the stored budgets, and no training split
        evaluate(Evaluation(dataroot=str(other), out=str(tmp_path / "d"), **{**common, "budget": 0.99}))
    assert again["price"] == pytest.approx(served["price"], abs=1e-6)
    assert list(again["gate_offsets"].values()) == pytest.approx(p.offsets, abs=1e-6)
