"""train.py end to end on the tiny synthetic world: one-batch fit, resume from last.ckpt, DDP on 2 CPU processes."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(request):
    pytest.importorskip("datasets.synthetic")
    try:
        return Path(request.getfixturevalue("tiny_world"))
    except pytest.FixtureLookupError:
        pytest.skip("tiny_world fixture not available")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("index_cache")


def tiny_config(tmp_path: Path, world: Path, cache: Path, **trainer) -> Path:
    """configs/tiny.yaml with its run folder moved under tmp_path and the dataroot set to the tiny world."""
    text = (REPO / "configs" / "tiny.yaml").read_text().replace("runs/tiny", str(tmp_path / "run"))
    cfg = yaml.safe_load(text)
    cfg["data"]["dataroot"] = str(world)
    cfg["data"]["cache_dir"] = str(cache)
    cfg["trainer"].update(trainer)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def steps_logged(run: Path) -> list[int]:
    with open(run / "csv" / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train_loss")]


def test_fit_one_batch_saves_run_and_loads(tmp_path, world, cache_dir):
    import train
    from fusion.detector import SensorConfig
    from fusion.module import GateFusionModule

    cli = train.main(["fit", "--config", str(tiny_config(tmp_path, world, cache_dir, max_steps=1))])
    run = tmp_path / "run"
    assert cli.trainer.global_step == 1
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list(run.glob("events.out.tfevents*")) and steps_logged(run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["dataroot"] == str(world) and saved["model"]["bev_cell"] == 3.2

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["sensors"] == "camera=high,lidar=fine,radar=on"
    model = GateFusionModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    batch = next(iter(cli.datamodule.val_dataloader()))
    dets, records = model.detect(batch, SensorConfig.parse("lidar=coarse,radar=on"))
    assert len(dets) == len(batch) == len(records)
    assert all(r.camera == "off" and r.gflops > 0 for r in records)
    assert all(torch.isfinite(d.boxes).all() for d in dets)


def test_print_config(tmp_path, world, cache_dir, capsys):
    import train

    with pytest.raises(SystemExit) as e:
        train.main(["fit", "--config", str(tiny_config(tmp_path, world, cache_dir)), "--print_config"])
    assert e.value.code in (0, None)
    assert "train_sensor_dropout" in capsys.readouterr().out


def test_resume_continues_global_step_and_logs(tmp_path, world, cache_dir):
    import train

    cfg = str(tiny_config(tmp_path, world, cache_dir))
    first = train.main(["fit", "--config", cfg])
    per_epoch = first.trainer.global_step
    assert per_epoch >= 1 and first.trainer.current_epoch == 1
    second = train.main(["fit", "--config", cfg, "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert second.trainer.global_step == 2 * per_epoch and second.trainer.current_epoch == 2
    assert steps_logged(tmp_path / "run") == list(range(2 * per_epoch))


def test_ddp_two_cpu_processes(tmp_path, world, cache_dir):
    cfg = tiny_config(tmp_path, world, cache_dir, max_steps=2, devices=2, strategy="ddp_find_unused_parameters_true")
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config", str(cfg)], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
