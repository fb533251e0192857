"""train.py end to end on the tiny synthetic world: one-batch fit in a run folder moved by trainer.default_root_dir,
every config parsed (overlays on their bases), one step of the demo model, resume from last.ckpt, DDP on 2 CPU
processes; slow: the demo config learns on the tiny world, and a full tiny fit followed by eval.py."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fusion.cost import relative_costs, table_from_dict
from fusion.gate import configurations

REPO = Path(__file__).resolve().parents[1]
BASES = ("demo", "nuscenes-mini", "nuscenes-trainval", "tiny")  # whole configs; the others are overlays on them
# every base alone, and each overlay on the bases its header names: --config base --config overlay ...
STACKS = [(b,) for b in BASES] + [(b, "gate") for b in BASES if b != "tiny"] + [
    ("demo", "long"), ("demo", "gate", "short"), ("demo", "gate", "robust"), ("nuscenes-trainval", "one-gpu"),
    ("nuscenes-trainval", "gate", "one-gpu")]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("index_cache")


def tiny_config(tmp_path: Path, world: Path, cache: Path, **trainer) -> Path:
    """configs/tiny.yaml with its run folder at tmp_path/run and the dataroot set to the tiny world."""
    cfg = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    cfg["data"].update(dataroot=str(world), cache_dir=str(cache))
    cfg["trainer"].update(default_root_dir=str(tmp_path / "run"), **trainer)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_losses(run: Path) -> dict[int, float]:
    """{step: train_loss} from run/csv/metrics.csv."""
    with open(run / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")}


def test_fit_one_batch_puts_the_run_under_default_root_dir_and_loads(tmp_path, tiny_world, cache_dir, monkeypatch):
    """configs/tiny.yaml as written, moved by --trainer.default_root_dir alone: config.yaml, TensorBoard events,
    csv/metrics.csv and checkpoints/ land there, and nothing in the config's own runs/tiny (cwd is tmp_path)."""
    import train
    from fusion.detector import SensorConfig
    from fusion.module import GateFusionModule

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "elsewhere" / "run"
    cli = train.main(["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.dataroot", str(tiny_world),
                      "--data.cache_dir", str(cache_dir), "--trainer.default_root_dir", str(run),
                      "--trainer.max_steps", "1"])
    assert cli.trainer.global_step == 1 and Path(cli.trainer.log_dir) == run
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith("events.")) == [
        "checkpoints", "config.yaml", "csv", "hparams.yaml"]
    assert list(run.glob("events.out.tfevents*")) and train_losses(run)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["dataroot"] == str(tiny_world) and saved["model"]["bev_cell"] == 3.2
    assert saved["trainer"]["default_root_dir"] == str(run)

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["sensors"] == "camera=high,lidar=fine,radar=on"
    model = GateFusionModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    batch = next(iter(cli.datamodule.val_dataloader()))
    dets, records = model.detect(batch, SensorConfig.parse("lidar=coarse,radar=on"))
    assert len(dets) == len(batch) == len(records)
    assert all(r.camera == "off" and 0 < r.cost < 1 for r in records)
    assert all(torch.isfinite(d.boxes).all() for d in dets)


def test_a_config_logger_is_kept(tmp_path):
    """A config that names trainer.logger keeps it: default_root_dir then only sets Lightning's defaults."""
    import train

    cli = train.main(["--config", str(REPO / "configs" / "tiny.yaml"), "--data.dataroot", str(tmp_path),
                      "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false"], run=False)
    assert cli.trainer.loggers == []
    cli = train.main(["--config", str(REPO / "configs" / "tiny.yaml"), "--data.dataroot", str(tmp_path),
                      "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "CSVLogger",
                      "--trainer.logger.save_dir", str(tmp_path / "mine")], run=False)
    assert [type(lg).__name__ for lg in cli.trainer.loggers] == ["CSVLogger"]
    assert cli.trainer.log_dir.startswith(str(tmp_path / "mine"))


def print_config(stack: tuple[str, ...], dataroot: Path, capsys) -> dict:
    """`train.py fit --print_config` of configs stacked in order (the dataroot overridden: nothing reads it while
    printing), parsed."""
    import train

    configs = [a for name in stack for a in ("--config", str(REPO / "configs" / f"{name}.yaml"))]
    with pytest.raises(SystemExit) as e:
        train.main(["fit", *configs, "--data.dataroot", str(dataroot), "--print_config"])
    assert e.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_every_config_file_is_a_base_or_in_a_stack():
    assert {p.stem for p in (REPO / "configs").glob("*.yaml")} == {name for stack in STACKS for name in stack}


@pytest.mark.parametrize("stack", STACKS, ids=["+".join(s) for s in STACKS])
def test_every_config_parses(stack, tmp_path, capsys):
    """Each base config, and each overlay on top of its bases, parses; the base names the run folder, once, as
    trainer.default_root_dir (an overlay names none: its command gives one), and leaves the loggers and checkpoint
    folder to it; each overlay's own settings win over its base's."""
    printed = print_config(stack, tmp_path, capsys)
    assert printed["trainer"]["default_root_dir"] == f"runs/{stack[0]}" and printed["trainer"]["logger"] is None
    assert "train_sensor_dropout" in printed["model"] and printed["data"]["dataroot"] == str(tmp_path)
    assert printed["model"]["gate"] is ("gate" in stack)
    if "robust" in stack:
        assert printed["data"]["train_corruption_prob"] > 0 and len(printed["data"]["train_corruptions"]) == 18
    if "long" in stack:
        assert printed["trainer"]["max_epochs"] == 40 and printed["model"]["radar_doppler"] is True
        assert any(c["class_path"].endswith("EarlyStopping") for c in printed["trainer"]["callbacks"])
    if "short" in stack:  # make demo's: 3 of the 8 epochs, validated once at the end
        assert printed["trainer"]["max_epochs"] == printed["trainer"]["check_val_every_n_epoch"] == 3
    if "one-gpu" in stack:
        assert printed["trainer"]["devices"] == 1 and printed["trainer"]["strategy"] == "auto"
    assert all("dirpath" not in (c.get("init_args") or {}) or c["init_args"]["dirpath"] is None
               for c in printed["trainer"]["callbacks"])


@pytest.mark.parametrize("base", ["demo", "nuscenes-trainval"])
def test_gate_overlay_changes_only_the_gate(base, tmp_path, capsys):
    """configs/gate.yaml on a base turns the gate on with its settings and leaves every other value of the base (its
    detector, data, recipe and latency table) as it is."""
    alone, gated = print_config((base,), tmp_path, capsys), print_config((base, "gate"), tmp_path, capsys)
    changed = {k for k in alone["model"] if alone["model"][k] != gated["model"][k]}
    assert changed == {"gate", "gate_own_glimpse"} and gated["model"]["gate_costs"] == alone["model"]["gate_costs"]
    assert {k: v for k, v in gated.items() if k != "model"} == {k: v for k, v in alone.items() if k != "model"}


def test_one_gpu_overlay_scales_the_learning_rate_linearly(tmp_path, capsys):
    """lr proportional to the total batch (devices x nodes x batch size): 8 GPUs -> 1 divides it by 8."""
    eight, one = (print_config(s, tmp_path, capsys) for s in (("nuscenes-trainval",), ("nuscenes-trainval", "one-gpu")))

    def total_batch(c: dict) -> int:
        return c["trainer"]["devices"] * c["trainer"]["num_nodes"] * c["data"]["batch_size"]

    assert (total_batch(eight), total_batch(one)) == (32, 4)
    assert one["model"]["lr"] == pytest.approx(eight["model"]["lr"] * total_batch(one) / total_batch(eight))
    assert {k: v for k, v in one["model"].items() if k != "lr"} == {k: v for k, v in eight["model"].items()
                                                                      if k != "lr"}


@pytest.mark.parametrize("base", ["nuscenes-mini", "nuscenes-trainval"])
def test_nuscenes_configs_validate_and_keep_the_best_nds(base, tmp_path, capsys):
    """The real-data configs score NDS at every validation (the callback's every_n_epochs is the validation's) and
    keep the checkpoint with the highest val_nds; trainval validates an evenly spread subset of its 6,019 val
    frames; the demo keeps val_loss (an NDS would cost its 15-minute budget)."""
    printed = print_config((base,), tmp_path, capsys)
    callbacks = {c["class_path"].rpartition(".")[2]: c.get("init_args") or {} for c in printed["trainer"]["callbacks"]}
    assert callbacks["DetectionValidation"]["every_n_epochs"] == printed["trainer"]["check_val_every_n_epoch"]
    assert (callbacks["ModelCheckpoint"]["monitor"], callbacks["ModelCheckpoint"]["mode"]) == ("val_nds", "max")
    assert printed["data"]["val_frames"] == (2000 if base == "nuscenes-trainval" else None)
    demo = print_config(("demo",), tmp_path, capsys)
    assert [c["init_args"]["monitor"] for c in demo["trainer"]["callbacks"] if "monitor" in c["init_args"]] == [
        "val_loss"]


def test_one_step_of_the_demo_model(tmp_path, tiny_world, cache_dir):
    """configs/demo.yaml (its model, grid and image size) trains one step on the tiny world."""
    import train

    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    cli = train.main(["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--data.dataroot", str(tiny_world),
                      "--data.cache_dir", str(cache_dir), "--data.batch_size", "1", "--data.num_workers", "0",
                      "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1",
                      "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"])
    assert cli.trainer.global_step == 1 and (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert {k: cli.model.hparams[k] for k in demo["model"]} == demo["model"]
    assert list(cli.datamodule.hparams.image_size) == demo["data"]["image_size"] == [320, 180]
    assert cli.model.detector.grid.H == 128 and torch.isfinite(torch.tensor(train_losses(tmp_path / "run")[0]))


def test_resume_continues_global_step_and_logs(tmp_path, tiny_world, cache_dir):
    """Two steps, then `--ckpt_path last` with max_steps 4: global_step, metrics.csv and the TensorBoard folder
    continue (two steps each, no validation: seconds, where two whole epochs took a minute). The stop at max_steps
    closes epoch 0, so the resumed run needs max_epochs 2."""
    import train

    cfg = str(tiny_config(tmp_path, tiny_world, cache_dir))
    gated = ["--model.gate", "true", "--model.gate_start", "0.0"]  # the gated model, its latency table measured
    first = train.main(["fit", "--config", cfg, "--trainer.max_steps", "2", *gated])
    assert first.trainer.global_step == 2
    costs = dict(first.model.hparams.gate_costs)
    second = train.main(["fit", "--config", cfg, "--trainer.max_steps", "4", "--trainer.max_epochs", "2",
                         "--ckpt_path", "last", *gated])
    assert second.trainer.global_step == 4
    assert second.model.hparams.gate_costs == costs  # the table the gate trained with, not a new measurement
    assert torch.equal(second.model.gate.costs, first.model.gate.costs)
    assert sorted(train_losses(tmp_path / "run")) == [0, 1, 2, 3]
    assert len(list((tmp_path / "run").glob("events.out.tfevents*"))) == 2  # the same folder, one file per session


def test_mixed_precision_steps(tmp_path, tiny_world, cache_dir):
    """The GPU configs train under autocast (precision 16-mixed); bf16-mixed on the CPU runs the same autocast paths:
    the gated model, its camera depth and semantic targets and its latency table, two finite steps."""
    import train

    cfg = str(tiny_config(tmp_path, tiny_world, cache_dir, max_steps=2, precision="bf16-mixed"))
    cli = train.main(["fit", "--config", cfg, "--model.gate", "true", "--model.gate_start", "0.0"])
    assert cli.trainer.global_step == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in train_losses(tmp_path / "run").values())


def test_ddp_two_cpu_processes(tmp_path, tiny_world, cache_dir):
    """The gated model on two processes: rank 0's latency table, broadcast, is the one both use."""
    cfg = tiny_config(tmp_path, tiny_world, cache_dir, max_steps=2, devices=2,
                      strategy="ddp_find_unused_parameters_true")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", str(cfg), "--model.gate", "true",
                           "--model.gate_start", "0.0"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["gate"] is True
    assert torch.allclose(ckpt["state_dict"]["gate.costs"],
                          relative_costs(table_from_dict(ckpt["hyper_parameters"]["gate_costs"]), configurations()))


RECORDER = """
import json, pytorch_lightning as pl
from fusion.validation import DetectionValidation


class Recorder(pl.Callback):
    def on_validation_end(self, trainer, pl_module):
        [cb] = [c for c in trainer.callbacks if isinstance(c, DetectionValidation)]
        with open(f"{OUT}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"val_nds": float(trainer.callback_metrics["val_nds"]), "nds": cb.last.nds,
                       "frames": cb.last.frames, "frames_per_rank": cb.last.frames_per_rank}, f)
"""


def test_ddp_validation_nds_is_the_same_on_both_ranks(tmp_path, tiny_world, cache_dir):
    """fusion.validation.DetectionValidation on two DDP processes (gloo): the 4 val frames split 2 + 2, gathered to
    rank 0, scored once, and the same val_nds logged on both ranks (a callback of the test records each rank's)."""
    import json

    (tmp_path / "recorder.py").write_text(RECORDER.replace("{OUT}", str(tmp_path)))
    cfg = tiny_config(tmp_path, tiny_world, cache_dir, devices=2, strategy="ddp_find_unused_parameters_true",
                      limit_train_batches=0.34, callbacks=[
                          {"class_path": "fusion.validation.DetectionValidation"},
                          {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
                           "init_args": {"save_last": True, "monitor": "val_nds", "mode": "max"}},
                          {"class_path": "recorder.Recorder"}])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", str(cfg)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1], ranks
    assert ranks[0]["frames_per_rank"] == [2, 2] and ranks[0]["frames"] == 4
    assert ranks[0]["val_nds"] == pytest.approx(ranks[0]["nds"], abs=1e-6)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("epoch=*.ckpt")] == ["epoch=0-step=1.ckpt"]


@pytest.mark.slow
def test_demo_config_learns_on_the_tiny_world(tmp_path, tiny_world, cache_dir):
    """The demo model and schedule, 40 steps on the tiny world: the training loss falls."""
    import train

    train.main(["fit", "--config", str(REPO / "configs" / "demo.yaml"), "--data.dataroot", str(tiny_world),
                "--data.cache_dir", str(cache_dir), "--data.batch_size", "2", "--data.num_workers", "0",
                "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "40",
                "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"])
    losses = list(train_losses(tmp_path / "run").values())
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.85 * first, (first, last)  # measured 12.3 -> 9.0


@pytest.mark.slow
def test_tiny_fit_then_eval_end_to_end(tmp_path, tiny_world, cache_dir):
    """The whole tiny config (one epoch with validation) as a script, then eval.py as a script on its best
    checkpoint over the whole val split: one result and one record per val frame, and metrics.json's NDS is the
    devkit's, both by its formula (DetectionMetrics.nd_score) from the mAP and TP errors written beside it and by
    DetectionEval run afresh on results.json."""
    import json

    import numpy as np
    from nuscenes import NuScenes
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.constants import TP_METRICS

    from sensors.names import CLASSES
    from tests.test_evaluation import _check_nds_is_the_devkits

    run, out = tmp_path / "run", tmp_path / "eval"
    proc = subprocess.run([sys.executable, "train.py", "fit", "--config", "configs/tiny.yaml", "--data.dataroot",
                           str(tiny_world), "--data.cache_dir", str(cache_dir), "--trainer.default_root_dir", str(run)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1 and "val_loss" in (run / "csv" / "metrics.csv").read_text()
    proc = subprocess.run([sys.executable, "eval.py", "--ckpt", str(best[0]), "--dataroot", str(tiny_world),
                           "--split", "synth_val", "--out", str(out), "--num-workers", "0", "--cache-dir",
                           str(cache_dir), "--measure-frames", "0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    nusc = NuScenes("v1.0-synth", str(tiny_world), verbose=False)
    val_scenes = set(json.loads((tiny_world / "v1.0-synth" / "splits.json").read_text())["synth_val"])
    val = {s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in val_scenes}
    results = json.loads((out / "results.json").read_text())["results"]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert m["frames"] == len(val) == len(records) and set(results) == {r["sample_token"] for r in records} == val
    boxes = [b for frame in results.values() for b in frame]
    assert sum(r["detections"] for r in records) == len(boxes) > 0 and sum(r["gt_boxes"] for r in records) > 0
    for b in boxes:
        assert b["detection_name"] in CLASSES and 0 <= b["detection_score"] <= 1 and min(b["size"]) > 0
        assert np.isfinite(b["translation"] + b["size"] + b["rotation"] + b["velocity"]).all()

    cfg = config_factory("detection_cvpr_2019")
    assert set(m["per_class_ap"]) == set(CLASSES) and set(m["tp_errors"]) == set(TP_METRICS)
    assert m["map"] == pytest.approx(np.mean(list(m["per_class_ap"].values())))
    for k in TP_METRICS:
        per_class = [m["per_class_tp_errors"][c][k] for c in CLASSES]
        assert m["tp_errors"][k] == pytest.approx(np.nanmean(per_class), nan_ok=True)
    tp_scores = [max(0.0, 1.0 - m["tp_errors"][k]) for k in TP_METRICS]  # as the devkit: NaN error -> 0
    nds = (cfg.mean_ap_weight * m["map"] + sum(tp_scores)) / (cfg.mean_ap_weight + len(tp_scores))
    assert m["nds"] == pytest.approx(nds) and 0 <= m["nds"] <= 1
    _check_nds_is_the_devkits(out, tiny_world)
