"""NDS during training (fusion/validation.py DetectionValidation) and the datamodule's validation subset: the callback's
val_nds is eval's on the same checkpoint and frames, a split without annotations gives NaN with the problem named, a
checkpoint monitoring val_nds at validations the callback skips is refused; val_frames validates an evenly spread
subset. DDP across two processes: tests/test_train.py."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CALLBACKS = [{"class_path": "fusion.validation.DetectionValidation", "init_args": {"every_n_epochs": 1}},
             {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
              "init_args": {"save_last": True, "monitor": "val_nds", "mode": "max", "save_top_k": 1}}]


def nds_config(tmp_path: Path, world: Path, cache: Path, **trainer) -> Path:
    """configs/tiny.yaml on `world` with the NDS callback and a checkpoint monitoring val_nds; one training batch per
    epoch (limit_train_batches 0.2 of 6), so that the epoch ends and validates."""
    cfg = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    cfg["data"].update(dataroot=str(world), cache_dir=str(cache))
    cfg["trainer"].update(default_root_dir=str(tmp_path / "run"), limit_train_batches=0.2, callbacks=CALLBACKS,
                          **trainer)
    path = tmp_path / "tiny-nds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_val_nds_is_evals_on_the_same_checkpoint_and_frames(tmp_path, tiny_world, monkeypatch):
    """A tiny fit logs val_nds / val_map (csv) equal to fusion.evaluate's on its checkpoint over the same val frames
    with the static configuration, from the same detections (the result rows the callback scored are eval's
    results.json), and the checkpoint monitoring val_nds is saved."""
    import datasets.evaluation as evaluation
    import train
    from fusion.evaluate import Evaluation, evaluate
    from fusion.validation import DetectionValidation

    scored = []
    write = evaluation.write_results
    monkeypatch.setattr(evaluation, "write_results", lambda p, results, m: scored.append(results) or write(p, results, m))
    cache = tmp_path / "cache"
    cli = train.main(["fit", "--config", str(nds_config(tmp_path, tiny_world, cache))])
    monkeypatch.setattr(evaluation, "write_results", write)
    [callback] = [c for c in cli.trainer.callbacks if isinstance(c, DetectionValidation)]
    run = tmp_path / "run"
    with open(run / "csv" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("val_nds")]
    assert len(logged) == 1 and len(scored) == 1
    best = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1

    m = evaluate(Evaluation(ckpt=str(run / "checkpoints" / "last.ckpt"), dataroot=str(tiny_world),
                            out=str(tmp_path / "eval"), batch_size=2, num_workers=0, measure_frames=0,
                            per_condition=False, cache_dir=str(cache)))
    assert float(logged[0]["val_nds"]) == pytest.approx(m["nds"], abs=1e-6)
    assert float(logged[0]["val_map"]) == pytest.approx(m["map"], abs=1e-6)
    assert callback.last.nds == pytest.approx(m["nds"], abs=1e-6) and callback.last.frames == m["frames"] == 4
    assert float(logged[0]["val/nds_frames"]) == 4
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert set(scored[0]) == set(results) and sum(len(v) for v in results.values()) > 0
    for token, rows in results.items():
        assert len(rows) == len(scored[0][token])
        for mine, theirs in zip(scored[0][token], rows):
            assert mine["detection_name"] == theirs["detection_name"]
            assert mine["detection_score"] == pytest.approx(theirs["detection_score"], abs=1e-6)
            assert mine["translation"] == pytest.approx(theirs["translation"], abs=1e-4)


def fake_trainer(world: Path, split: str = "synth_val", check_val_every_n_epoch: int = 1, checkpoints=()):
    return SimpleNamespace(datamodule=SimpleNamespace(hparams=SimpleNamespace(
        dataroot=str(world), version="v1.0-synth", val_split=split)),
        check_val_every_n_epoch=check_val_every_n_epoch, checkpoint_callbacks=list(checkpoints))


def test_frames_without_annotations_give_nan_and_name_the_split(tiny_world):
    from fusion.validation import DetectionValidation

    row = {"sample_token": "a", "translation": [0.0, 0.0, 0.0], "size": [1.0, 1.0, 1.0], "rotation": [1.0, 0, 0, 0],
           "velocity": [0.0, 0.0], "detection_name": "car", "detection_score": 0.5, "attribute_name": ""}
    parts = [({"a": [row]}, {"a": 0}, 1), ({"b": []}, {"b": 0}, 1)]
    with pytest.warns(UserWarning, match="split 'synth_test'.*no annotated box.*NaN"):
        score = DetectionValidation()._score(fake_trainer(tiny_world, "synth_test"), None, parts)
    assert math.isnan(score.nds) and math.isnan(score.map) and score.frames == 2 and score.frames_per_rank == [1, 1]


def test_a_checkpoint_monitoring_val_nds_at_unscored_validations_is_refused(tiny_world):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from fusion.validation import DetectionValidation

    every = ModelCheckpoint(monitor="val_nds", mode="max")
    with pytest.raises(ValueError, match="every 2 epochs.*multiple of 2"):
        DetectionValidation(2).setup(fake_trainer(tiny_world, checkpoints=[every]), None, "fit")
    DetectionValidation(2).setup(fake_trainer(tiny_world, check_val_every_n_epoch=4, checkpoints=[every]), None, "fit")
    DetectionValidation(2).setup(fake_trainer(tiny_world, checkpoints=[
        ModelCheckpoint(monitor="val_nds", mode="max", every_n_epochs=2)]), None, "fit")
    DetectionValidation(2).setup(fake_trainer(tiny_world, checkpoints=[ModelCheckpoint(monitor="val_loss")]), None,
                                 "fit")
    with pytest.raises(ValueError, match="every_n_epochs must be >= 1"):
        DetectionValidation(0)


def test_val_frames_validates_an_evenly_spread_subset(tiny_world, tmp_path):
    """val_frames 2 of the 4 val frames: frames 0 and 2, the same at every validation; test and predict keep the
    whole split; val_frames at least the split's size is the whole split."""
    from datasets.datamodule import NuScenesDataModule

    def tokens(loader):
        return [m.sample_token for batch in loader for m in batch.meta]

    dm = NuScenesDataModule(str(tiny_world), num_workers=0, cache_dir=str(tmp_path), val_frames=2)
    whole = tokens(dm.test_dataloader())
    assert len(whole) == 4 and tokens(dm.predict_dataloader()) == whole
    assert tokens(dm.val_dataloader()) == tokens(dm.val_dataloader()) == [whole[0], whole[2]]
    dm = NuScenesDataModule(str(tiny_world), num_workers=0, cache_dir=str(tmp_path), val_frames=10)
    assert tokens(dm.val_dataloader()) == whole
    with pytest.raises(ValueError, match="val_frames must be >= 1"):
        NuScenesDataModule(str(tiny_world), val_frames=0)
