#!/usr/bin/env bash
# CUDA smoke check: the GPU configs train, resume and evaluate on a CUDA device, and the demo recipe trains there.
#   bash bench/gpu_smoke.sh OUT_DIR [TINY_WORLD] [DEMO_WORLD]
# On the tiny world (make tiny-world): fusion.cost on cuda for the demo and nuScenes configs; configs/tiny.yaml on the
# GPU; configs/nuscenes-mini.yaml with the configs/gate.yaml overlay (16-mixed, latency table measured on the GPU)
# for 2 epochs, resumed for a third, scoring NDS at every validation (fusion/validation.py); eval.py on cuda, static and at a budget, in mixed precision at batch size 4
# (its boxes set beside float32's), and results-only (--no-score, read back by the devkit's loader); the export of
# every branch (python -m fusion.export) from the cuda-trained checkpoint. With DEMO_WORLD
# (generated if missing):
# configs/demo.yaml trained on the GPU (seed 0) and evaluated with every sensor and each sensor alone, to set beside
# the CPU-trained seeds.
# Every step's log is OUT_DIR/<step>.log; the summary goes to stdout. A failed step does not stop the later ones.
set -u
OUT=${1:?usage: bash bench/gpu_smoke.sh OUT_DIR [TINY_WORLD] [DEMO_WORLD]}
TINY=${2:-data/tiny}
DEMO=${3:-}
PY=${PY:-python3}
WORKERS=${WORKERS:-8}
DEVICE=${DEVICE:-cuda}     # DEVICE=cpu ACCEL=cpu PRECISION=32-true: the same steps on a CPU, to check this script
ACCEL=${ACCEL:-gpu}
PRECISION=${PRECISION:-16-mixed}
mkdir -p "$OUT"
FAILED=0

step() {  # step NAME COMMAND...: run, time, print rc and the log's tail
    local name=$1; shift
    local t0; t0=$(date +%s%N)
    echo "=== $name: $*"
    "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "=== $name: rc=$rc, $(( ($(date +%s%N) - t0) / 1000000 )) ms"
    [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
    tail -n "${TAIL:-6}" "$OUT/$name.log"
    return $rc
}

cat > "$OUT/nds-every-epoch.yaml" <<'YAML'
trainer:  # the mini config's callbacks, NDS scored at every validation of this short run
  callbacks:
    - class_path: fusion.validation.DetectionValidation
      init_args: {every_n_epochs: 1}
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args: {save_last: true, monitor: val_nds, mode: max, save_top_k: 1}
YAML
mini_gated=(--config configs/nuscenes-mini.yaml --config configs/gate.yaml --config "$OUT/nds-every-epoch.yaml")
synth=(--data.dataroot "$TINY" --data.version v1.0-synth --data.train_split synth_train --data.val_split synth_val)
evalargs=(--dataroot "$TINY" --version v1.0-synth --split synth_val --device "$DEVICE")

step env $PY -c "import torch, numpy, pytorch_lightning, nuscenes
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
print('torch', torch.__version__, 'cuda', torch.version.cuda, gpu, '| numpy', numpy.__version__,
      '| lightning', pytorch_lightning.__version__)"
if [ -z "${QUICK:-}" ]; then  # QUICK=1: only the nuScenes gated config and its evaluation
    TAIL=14 step cost_demo $PY -m fusion.cost --config configs/demo.yaml --device "$DEVICE"
    TAIL=14 step cost_mini $PY -m fusion.cost "${mini_gated[@]}" --device "$DEVICE"
    step train_tiny $PY train.py fit --config configs/tiny.yaml --data.dataroot "$TINY" --trainer.accelerator "$ACCEL" \
        --trainer.default_root_dir "$OUT/tiny"
fi
step train_mini_gated $PY train.py fit "${mini_gated[@]}" "${synth[@]}" \
    --data.num_workers "$WORKERS" --trainer.accelerator "$ACCEL" --trainer.precision "$PRECISION" \
    --trainer.max_epochs 2 --trainer.check_val_every_n_epoch 1 --trainer.enable_progress_bar false \
    --trainer.default_root_dir "$OUT/mini-gated"
step resume_mini_gated $PY train.py fit "${mini_gated[@]}" "${synth[@]}" \
    --data.num_workers "$WORKERS" --trainer.accelerator "$ACCEL" --trainer.precision "$PRECISION" \
    --trainer.max_epochs 3 --trainer.check_val_every_n_epoch 1 --trainer.enable_progress_bar false \
    --trainer.default_root_dir "$OUT/mini-gated" --ckpt_path last
ckpt=$OUT/mini-gated/checkpoints/last.ckpt
step eval_mini_full $PY eval.py --ckpt "$ckpt" "${evalargs[@]}" --out "$OUT/mini-gated/eval-full" \
    --sensors camera=high,lidar=fine,radar=on
step eval_mini_budget $PY eval.py --ckpt "$ckpt" "${evalargs[@]}" --out "$OUT/mini-gated/eval-b0.5" --budget 0.5 \
    --calibration-frames 8
step eval_mini_mixed $PY eval.py --ckpt "$ckpt" "${evalargs[@]}" --out "$OUT/mini-gated/eval-mixed" \
    --sensors camera=high,lidar=fine,radar=on --precision "${PRECISION%-true}" --batch-size 4 \
    --num-workers "$WORKERS" --measure-frames 4 --no-progress
step eval_mini_no_score $PY eval.py --ckpt "$ckpt" "${evalargs[@]}" --out "$OUT/mini-gated/eval-no-score" \
    --no-score --batch-size 4 --num-workers "$WORKERS" --measure-frames 4 --no-progress
step export_mini_gated $PY -m fusion.export --ckpt "$ckpt" --out "$OUT/mini-gated/export"
step records $PY - "$OUT/mini-gated" <<'EOF'
import csv, json, sys
from pathlib import Path
import torch
run = Path(sys.argv[1])
ckpt = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
print("resumed checkpoint global_step", ckpt["global_step"], "operating points",
      (ckpt.get("gate_operating_points") or {}).get("budgets"))
rows = [r for r in csv.DictReader(open(run / "csv" / "metrics.csv")) if r.get("val_nds")]
print("val_nds per validation", [(r["epoch"], r["val_nds"], r["val_map"]) for r in rows])
print("export manifest", [g["name"] for g in json.loads((run / "export" / "manifest.json").read_text())["graphs"]])
for name in ("eval-full", "eval-b0.5"):
    m = json.loads((run / name / "metrics.json").read_text())
    recs = [json.loads(l) for l in (run / name / "records.jsonl").read_text().splitlines()]
    keys = sorted(recs[0])
    print(name, "device", m["device"], "NDS", round(m["nds"], 4), "frames", len(recs), "record keys", keys)
full, mixed = (json.loads((run / d / "results.json").read_text())["results"] for d in ("eval-full", "eval-mixed"))
m = json.loads((run / "eval-mixed" / "metrics.json").read_text())
same = [len(full[t]) == len(mixed[t]) for t in full]
diff = max((abs(a["detection_score"] - b["detection_score"]) for t in full if len(full[t]) == len(mixed[t])
            for a, b in zip(full[t], mixed[t])), default=0.0)
print("eval-mixed", m["throughput"], "NDS", round(m["nds"], 4), "vs float32", round(json.loads(
      (run / "eval-full" / "metrics.json").read_text())["nds"], 4), f"same box count on {sum(same)}/{len(same)} "
      f"frames, max score difference {diff:.2e}, latency measured on {m['measured_frames']} frames")
from nuscenes.eval.common.loaders import load_prediction
from nuscenes.eval.detection.data_classes import DetectionBox
boxes, meta = load_prediction(str(run / "eval-no-score" / "results.json"), 500, DetectionBox)
print("eval-no-score: the devkit loads", len(boxes.sample_tokens), "samples, meta", meta)
EOF

if [ -n "$DEMO" ]; then
    if [ ! -f "$DEMO/v1.0-synth/sample.json" ]; then
        step world $PY -m datasets.synthetic --out "$DEMO" --preset demo --workers "$(nproc)"
    fi
    step train_demo $PY train.py fit --config configs/demo.yaml --data.dataroot "$DEMO" --trainer.accelerator "$ACCEL" \
        --data.num_workers "$WORKERS" --trainer.enable_progress_bar false --trainer.default_root_dir "$OUT/demo"
    for s in camera=high,lidar=fine,radar=on camera=off,lidar=fine,radar=off camera=high,lidar=off,radar=off \
             camera=off,lidar=off,radar=on; do
        name=eval_demo_$(echo "$s" | tr ',=' '_-')
        TAIL=3 step "$name" $PY eval.py --ckpt "$OUT/demo/checkpoints/last.ckpt" --dataroot "$DEMO" \
            --version v1.0-synth --split synth_val --device "$DEVICE" --sensors "$s" --out "$OUT/demo/$name" \
            --num-workers "$WORKERS" --measure-frames 10
    done
    step demo_summary $PY - "$OUT/demo" <<'PYEOF'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("eval_demo_*/metrics.json")):
    m = json.loads(f.read_text())
    tp, sensors = m["tp_errors"], ",".join(f"{k}={v}" for k, v in m["sensors"].items())
    print(f"{sensors}: NDS {m['nds']:.4f} mAP {m['map']:.4f} mAOE {tp['orient_err']:.3f} mAVE {tp['vel_err']:.3f} "
          f"{m['latency_ms']['mean']:.1f} ms/frame on {m['device']}")
PYEOF
fi
echo "=== gpu_smoke: $FAILED step(s) failed"
exit $((FAILED > 0))
