"""GateFusionModule: the LightningModule that trains and runs the fusion detector and its gate.

Training uses the static sensor configuration (`sensors`), except that with probability `train_sensor_dropout` per frame
a random non-empty subset of the present sensors at random resolutions is used instead, so that one model can be
evaluated under every static configuration and every branch keeps learning. With `gate`, after the first `gate_start` of
the training steps, the gate (fusion/gate.py) learns too, by `gate_estimator`: "regression" (the default) predicts each
frame's detection loss under the configuration it ran, the detector training as in the static recipe; "gumbel" decides
the frames not given a random subset by a straight-through Gumbel-softmax sample. With `gate_chooses_training` > 0, a
"regression" gate also decides what the detector trains on: that share of the frames not given a random subset run a
configuration sampled from its logits at the batch's budget, the rest the static one. Either way, for a budget b drawn
per batch between the cheapest configuration's share and 1, the loss adds `gate_cost_weight * |mean expected cost - b|`
(costs as fractions of full, from the latency table `gate_costs`), the expectation under a softmax at a temperature
falling from `gate_tau[0]` to `gate_tau[1]`. Validation uses the static configuration; `detect` the static
configuration, the one given, or, with a budget, the gate. Hyperparameters are plain values (save_hyperparameters), so
`GateFusionModule.load_from_checkpoint(path, map_location="cpu")` rebuilds it.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from fusion.cost import (config_cost, measure_latency_table, relative_costs, synthetic_frame, table_from_dict,
                         table_to_dict)
from fusion.detector import FrameRecord, SensorConfig, build_detector
from fusion.gate import Gate, configuration_table, configurations
from fusion.head import DetectorOutput
from sensors.frame import Batch, Detections
from sensors.names import IMAGE_SIZE, MODES, SENSORS


def random_decisions(present: Tensor, static: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """(B, 3) bool present, (B, 3) long static decisions -> (B, 3) long: each frame with probability p gets a
    random non-empty subset of its present sensors (uniform over subsets: each sensor alone gets as many frames as
    any combination) with a random non-off mode per sensor of the subset."""
    B, device = present.shape[0], present.device
    out = static.clone()
    pick = torch.rand(B, generator=generator) < p
    for b in torch.nonzero(pick).flatten().tolist():
        avail = [i for i in range(len(SENSORS)) if bool(present[b, i])]
        if not avail:
            continue
        mask = int(torch.randint(1, 2 ** len(avail), (1,), generator=generator))
        row = [0] * len(SENSORS)
        for j, i in enumerate(avail):
            if mask >> j & 1:
                row[i] = int(torch.randint(1, len(MODES[SENSORS[i]]), (1,), generator=generator))
        out[b] = torch.tensor(row, device=device)
    return out


def one_cycle(step: int, total: int, pct_start: float = 0.2, div: float = 25.0, final_div: float = 1e4) -> float:
    """Learning-rate factor of OneCycleLR's cosine schedule: lr/div -> lr over the first pct_start of `total`
    steps, then down to lr/(div * final_div)."""
    warm = max(1, int(pct_start * total))
    if step < warm:
        return 1 / div + (1 - 1 / div) * (1 - math.cos(math.pi * step / warm)) / 2
    p = min(1.0, (step - warm) / max(1, total - warm))
    low = 1 / (div * final_div)
    return low + (1 - low) * (1 + math.cos(math.pi * p)) / 2


class GateFusionModule(pl.LightningModule):
    """Detector (fusion/detector.py) + losses + optimisation.

    sensors:              static configuration for validation / inference, e.g. "camera=high,lidar=fine,radar=on"
    train_sensor_dropout: per-frame probability of training with a random sensor subset / resolution
    lr, weight_decay:     AdamW; one-cycle schedule (peak lr, warm-up fraction pct_start) over all training steps
    camera_depth_weight:  weight of the camera depth loss supervised by LiDAR (sensors/camera.py), training only
    camera_semantic_weight: weight of the camera's image-space semantic loss supervised by the boxes projected into
                          the images (sensors/camera.py), training only
    camera_heatmap_weight: weight of the training-only heatmap loss of the camera's BEV alone (0: no such head;
                          see build_detector)
    gate:                 train and carry the gate (fusion/gate.py); without it the model is static
    gate_costs:           latency table, ms per branch and mode and for the shared part ({"camera=low": ms, ...,
                          "shared": ms}; `python -m fusion.cost --config C` prints it for this machine). None:
                          measured on the training device at the start of fitting (or of the first detect), then
                          stored in the hyperparameters, so the checkpoint records the costs its gate learned with
    gate_start:           fraction of the training steps before the gate decides (modality dropout alone before)
    gate_cost_weight:     weight of the compute penalty |mean expected cost - budget|
    gate_tau:             Gumbel-softmax temperature at the start and the end of the gate's training
    gate_hidden:          width of the gate's MLP
    gate_estimator:       how the gate learns (fusion/gate.py). "regression": the detector trains exactly as the
                          static recipe (modality dropout, the static configuration otherwise), and the gate learns
                          to predict each frame's detection loss under the configuration it ran (smooth L1 on the
                          per-frame losses, detached), with the price learned by the compute penalty at a budget
                          drawn per batch. "gumbel": after gate_start the frames not given a random subset are
                          decided by a straight-through Gumbel-softmax sample, whose one-hot multiplies each sensor's
                          features, so the detection loss reaches the gate through them
    gate_chooses_training: ("regression") the share in [0, 1] of the frames not given a random subset
                          (train_sensor_dropout) that, after gate_start, run a configuration sampled from the gate's
                          logits at a budget drawn per batch, at the temperature gate_tau (exploration), instead of
                          the static configuration: each cheaper configuration trains on the frames the gate gives
                          it, and the gate regresses the losses of what it chose, while the rest of the frames keep
                          the static configuration (full fusion) trained. 0: the detector trains as in the static
                          recipe. The choice takes no gradient; the detector's training depends on it
    gate_paired:          ("regression") also run every frame of the gate's phase, without gradients, under a second
                          random configuration, and fit the difference of the gate's two predicted losses to the
                          difference of the two measured ones: the frame's content, most of its loss, cancels, and
                          what is left is what the choice of configuration changes on that frame (one more forward
                          pass per training step of the gate's phase)
    gate_own_glimpse:     each configuration's estimate reads only the glimpses of the sensors it runs (fusion/gate.py),
                          so that a dead or degraded sensor cannot move what the configurations without it are worth
    **detector:           build_detector's hyperparameters (grid, widths, point budgets, head loss weights), passed
                          on by name. They are declared once, in build_detector's signature; LightningCLI reads them
                          from there (they are flat `model.*` keys of the YAML configs) and save_hyperparameters
                          stores them flat, so `load_from_checkpoint` rebuilds the same detector.
    """

    def __init__(self, sensors: str = "camera=high,lidar=fine,radar=on", train_sensor_dropout: float = 0.5,
                 lr: float = 2e-3, weight_decay: float = 1e-2, pct_start: float = 0.2,
                 camera_depth_weight: float = 0.5, camera_heatmap_weight: float = 0.0,
                 camera_semantic_weight: float = 0.0, gate: bool = False, gate_costs: dict[str, float] | None = None,
                 gate_start: float = 0.3, gate_cost_weight: float = 2.0, gate_tau: tuple[float, float] = (1.0, 0.2),
                 gate_hidden: int = 64, gate_estimator: str = "regression", gate_paired: bool = False,
                 gate_own_glimpse: bool = False, gate_chooses_training: float = 0.0, **detector):
        super().__init__()
        self.save_hyperparameters()
        self.static = SensorConfig.parse(sensors)
        if self.static.indices() == (0, 0, 0):
            raise ValueError(f"GateFusionModule: sensors {sensors!r} turns every sensor off")
        for name, value in (("camera_depth_weight", camera_depth_weight),
                            ("camera_heatmap_weight", camera_heatmap_weight),
                            ("camera_semantic_weight", camera_semantic_weight)):
            if value < 0:
                raise ValueError(f"GateFusionModule: {name} must be >= 0, got {value}")
        for name, share in (("train_sensor_dropout", train_sensor_dropout),
                            ("gate_chooses_training", gate_chooses_training)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"GateFusionModule: {name} must be in [0, 1], got {share}")
        if not 0.0 <= gate_start < 1.0:
            raise ValueError(f"GateFusionModule: gate_start must be in [0, 1), got {gate_start}")
        if gate_cost_weight < 0 or len(gate_tau) != 2 or not all(t > 0 for t in gate_tau):
            raise ValueError(f"GateFusionModule: gate_cost_weight must be >= 0 and gate_tau two temperatures > 0, got "
                             f"{gate_cost_weight}, {gate_tau}")
        for name, on in (("gate_paired", gate_paired), ("gate_chooses_training", gate_chooses_training)):
            if on and gate_estimator != "regression":
                raise ValueError(f"GateFusionModule: {name} needs gate_estimator 'regression', got {gate_estimator!r}")
        self.detector = build_detector(camera_heatmap=camera_heatmap_weight > 0, **detector)
        self.latency: dict | None = table_from_dict(gate_costs) if gate_costs else None
        costs = relative_costs(self.latency, configurations()) if self.latency else torch.ones(len(configurations()))
        self.gate = Gate(costs, gate_hidden, gate_estimator, gate_own_glimpse) if gate else None

    def forward(self, batch: Batch, decisions: Tensor) -> DetectorOutput:
        return self.detector(batch, decisions)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, Batch) else super().transfer_batch_to_device(batch, device,
                                                                                                  dataloader_idx)

    def setup(self, stage: str) -> None:
        """Without gate_costs, a gated model measures its latency table on the training device before fitting
        (rank 0's, broadcast, so that every process penalises the same costs)."""
        if stage == "fit" and self.gate is not None and self.latency is None:
            dm = self.trainer.datamodule
            image_size = tuple(dm.hparams.get("image_size", IMAGE_SIZE)) if dm is not None else IMAGE_SIZE
            # setup runs before the strategy moves the model: measure where it will train
            device = self.trainer.strategy.root_device
            frame = synthetic_frame(self.detector.grid, image_size, 32768, 300).to(device)
            table = self.trainer.strategy.broadcast(measure_latency_table(self.detector.to(device), frame, repeats=5))
            self.set_latency(table)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A resumed run keeps the latency table its gate was trained with (setup measured a new one before the
        checkpoint was restored)."""
        costs = (checkpoint.get("hyper_parameters") or {}).get("gate_costs")
        if costs and self.gate is not None:
            self.set_latency(table_from_dict(costs))

    def set_latency(self, table: dict) -> None:
        """Use a measured latency table (fusion/cost.py measure_latency_table) for the gate's costs and record it in the
        hyperparameters."""
        self.hparams.gate_costs = table_to_dict(table)
        self.latency = table = table_from_dict(self.hparams.gate_costs)  # as rounded in the checkpoint
        if self.gate is not None:
            self.gate.costs.copy_(relative_costs(table, configurations()).to(self.gate.costs))

    def gate_progress(self) -> float | None:
        """Progress in [0, 1] through the gate's training phase; None before it (or without a gate)."""
        if self.gate is None or self.trainer is None:
            return None
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        start = int(self.hparams.gate_start * total)
        if self.global_step < start:
            return None
        return min(1.0, (self.global_step - start) / max(1, total - start))

    def training_decisions(self, batch: Batch) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(decisions (B, 3), gate weights (B, 3) or None, compute penalty or None) for one training batch."""
        static = self.static.decisions(batch.present)
        progress = self.gate_progress()
        if progress is None or self.gate.estimator == "regression" and not self.hparams.gate_chooses_training:
            return random_decisions(batch.present, static, self.hparams.train_sensor_dropout), None, None
        B = len(batch)
        if self.gate.estimator == "regression":  # gate_chooses_training: a sample of the gate's choice, no gradient
            budget, tau = self.gate_budget_and_tau(progress)
            with torch.no_grad():
                logits = self.gate(batch, torch.full((B,), budget, device=batch.present.device))
                chosen = self.gate.table[torch.distributions.Categorical(logits=logits / tau).sample()]
            chosen = torch.where(batch.present.bool(), chosen, torch.zeros_like(chosen))
            by_gate = (torch.rand(B) < self.hparams.gate_chooses_training).to(chosen.device)  # the rest: static
            chosen = torch.where(by_gate[:, None], chosen, static.to(chosen.device))
            return random_decisions(batch.present, chosen, self.hparams.train_sensor_dropout), None, None
        by_gate = torch.rand(B) >= self.hparams.train_sensor_dropout  # the other frames: a random subset
        randomised = random_decisions(batch.present, static, 1.0).to(static.device)
        by_gate = by_gate.to(static.device)
        budget, tau = self.gate_budget_and_tau(progress)
        logits = self.gate(batch, torch.full((B,), budget, device=batch.present.device))
        decisions, weights = self.gate.selection(self.gate.sample(logits, tau))
        decisions = torch.where(by_gate[:, None], decisions, randomised)
        weights = torch.where(by_gate[:, None], weights, torch.ones_like(weights))
        expected = self.gate.expected_cost(logits).mean()
        self.log_gate(expected, budget, tau, decisions[by_gate], B)
        return decisions, weights, (expected - budget).abs()

    def gate_budget_and_tau(self, progress: float) -> tuple[float, float]:
        """A training batch's budget, uniform between the cheapest configuration's share and 1, and the softmax
        temperature at `progress` through the gate's phase (gate_tau[0] -> gate_tau[1], geometric)."""
        lo = self.gate.min_budget
        t0, t1 = self.hparams.gate_tau
        return lo + (1 - lo) * float(torch.rand(())), t0 * (t1 / t0) ** progress

    def log_gate(self, expected: Tensor, budget: float, tau: float, chosen: Tensor, batch_size: int) -> None:
        """TensorBoard: the gate's expected cost, the budget, the temperature, and the share of `chosen` (K, 3)
        decisions running each sensor in each mode."""
        log = {"gate/expected_cost": expected.detach(), "gate/budget": torch.tensor(budget),
               "gate/tau": torch.tensor(tau)}
        if len(chosen):
            for i, s in enumerate(SENSORS):
                for m_i, m in enumerate(MODES[s]):
                    log[f"gate/{s}_{m}"] = (chosen[:, i] == m_i).float().mean()
        self.log_dict(log, batch_size=batch_size)

    def gate_regression(self, batch: Batch, decisions: Tensor, outputs: DetectorOutput, progress: float
                        ) -> tuple[Tensor, Tensor]:
        """(fit, penalty) of the "regression" gate on one training batch: smooth L1 between the gate's predicted loss
        for the configuration each frame ran and that frame's detection loss (detached: the detector's training is
        untouched), with gate_paired plus smooth L1 between predicted and measured loss differences against a second
        random configuration of the same frame, and |mean expected cost - b| at a budget b drawn for the batch, the
        expectation under softmax(logits / tau) of the (detached) risks, which trains the price alone."""
        head = self.detector.head
        with torch.no_grad():
            target = head.frame_losses(outputs, batch.gt)
            if self.hparams.gate_paired:
                other = random_decisions(batch.present, self.static.decisions(batch.present), 1.0)
                other = other.to(decisions.device)
                paired = head.frame_losses(self.detector.shared(self.detector.encode(batch, other), other > 0),
                                           batch.gt)
        risk = self.gate.risk(batch)
        k = self.gate.index_of(decisions)
        ran = k >= 0
        fit = F.smooth_l1_loss(risk[ran, k[ran]], target[ran]) if bool(ran.any()) else risk.sum() * 0.0
        if self.hparams.gate_paired:
            k2 = self.gate.index_of(other)
            both = ran & (k2 >= 0)
            if bool(both.any()):
                fit = fit + F.smooth_l1_loss(risk[both, k[both]] - risk[both, k2[both]], target[both] - paired[both])
        B = len(batch)
        budget, tau = self.gate_budget_and_tau(progress)
        logits = self.gate.logits(risk.detach(), torch.full((B,), budget, device=risk.device), batch.present)
        expected = (logits / tau).softmax(1) @ self.gate.costs
        self.log_gate(expected.mean(), budget, tau, self.gate.table[logits.argmax(1)], B)
        return fit, (expected.mean() - budget).abs()

    def _step(self, batch: Batch, decisions: Tensor, stage: str, weights: Tensor | None = None,
              penalty: Tensor | None = None) -> Tensor:
        return self._loss(batch, decisions, self.detector(batch, decisions, weights), stage, penalty)

    def _loss(self, batch: Batch, decisions: Tensor, outputs: DetectorOutput, stage: str,
              penalty: Tensor | None = None) -> Tensor:
        """The loss of `outputs`, the detector's on `batch` under `decisions`, its parts logged under `stage`."""
        losses = self.detector.head.loss(outputs, batch.gt)
        camera = (("camera_depth", outputs.camera_depth_loss, self.hparams.camera_depth_weight),
                  ("camera_semantic", outputs.camera_semantic_loss, self.hparams.camera_semantic_weight))
        for name, loss, weight in camera:  # training only: the camera's depth (LiDAR) and image semantics (boxes)
            if loss is not None:
                losses[name] = loss
                losses["loss"] = losses["loss"] + weight * loss
        if "camera_heatmap" in losses:  # training only: the camera's BEV detecting alone
            losses["loss"] = losses["loss"] + self.hparams.camera_heatmap_weight * losses["camera_heatmap"]
        progress = self.gate_progress() if stage == "train" else None
        if progress is not None and self.gate.estimator == "regression":
            losses["gate_fit"], penalty = self.gate_regression(batch, decisions, outputs, progress)
            losses["loss"] = losses["loss"] + losses["gate_fit"]
        if penalty is not None:
            losses["gate_penalty"] = penalty
            losses["loss"] = losses["loss"] + self.hparams.gate_cost_weight * penalty
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in losses.items() if k != "loss"}, batch_size=len(batch),
                      prog_bar=False, sync_dist=stage != "train")
        self.log(f"{stage}_loss", losses["loss"].detach(), batch_size=len(batch), prog_bar=True,
                 sync_dist=stage != "train")
        return losses["loss"]

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        decisions, weights, penalty = self.training_decisions(batch)
        return self._step(batch, decisions, "train", weights, penalty)

    def validation_step(self, batch: Batch, batch_idx: int) -> dict:
        """{"loss": val_loss, "output": the DetectorOutput of the static configuration}: the output goes to the
        callbacks' on_validation_batch_end, where fusion/validation.py decodes it for NDS without a second forward."""
        decisions = self.static.decisions(batch.present)
        outputs = self.detector(batch, decisions)
        return {"loss": self._loss(batch, decisions, outputs, "val"), "output": outputs}

    def configure_optimizers(self):
        """AdamW + a one-cycle schedule over trainer.estimated_stepping_batches. The schedule is a LambdaLR of the
        step (nothing of it is in the checkpoint), so a run resumed with a larger max_epochs stretches it to the
        new length instead of failing like OneCycleLR, whose saved total_steps would be exceeded."""
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        pct = self.hparams.pct_start
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: one_cycle(step, total, pct))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def latency_table(self, batch: Batch) -> dict:
        """ms per (sensor, mode) and SHARED: the hyperparameters' gate_costs, else measured once on the first frame of
        `batch` (fusion/cost.py measure_latency_table) and kept."""
        if self.latency is None:
            try:  # never measure inside an outer FlopCounterMode (e.g. evaluation's own count)
                from torch.utils._python_dispatch import _disable_current_modes
            except ImportError:  # pragma: no cover
                from contextlib import nullcontext as _disable_current_modes
            frame = batch.select(torch.zeros(1, dtype=torch.long))
            frame.present = torch.ones_like(frame.present)
            was_training = self.training
            with _disable_current_modes():
                self.set_latency(measure_latency_table(self.detector, frame, repeats=3))
            self.train(was_training)
        return self.latency

    @torch.no_grad()
    def choose(self, batch: Batch, sensors: SensorConfig | None = None, budget: float | None = None,
               price: float = 0.0) -> tuple[Tensor, dict[str, Tensor] | None]:
        """(decisions (B, 3) long, the gate's per-sensor mode probabilities or None): the gate's hard choice at
        `budget` and `price` (fusion/gate.py calibrate_price), else the static configuration `sensors` (default:
        the hyperparameters'). The probabilities are those of the logits at that price, the ones the choice is the
        argmax of (softmax, summed per sensor and mode)."""
        if budget is None:
            return (sensors if sensors is not None else self.static).decisions(batch.present), None
        if self.gate is None:
            raise ValueError("GateFusionModule: this checkpoint has no gate (trained with gate: false); evaluate it "
                             "with a static configuration instead of a budget")
        logits = self.gate(batch, torch.full((len(batch),), float(budget), device=batch.present.device))
        decisions = self.gate.table[self.gate.decide(logits, price)]
        decisions = torch.where(batch.present.bool(), decisions, torch.zeros_like(decisions))
        return decisions, self.gate.marginals(logits - price * self.gate.costs)

    @torch.no_grad()
    def configuration_losses(self, batch: Batch) -> Tensor:
        """(B, K) each frame's detection loss (the head's frame_losses: what the "regression" gate predicts) under
        every configuration the gate chooses among (fusion/gate.py configurations()), in eval mode."""
        was_training = self.training
        self.eval()
        table = configuration_table(batch.present.device)
        losses = torch.stack([self.detector.head.frame_losses(self.detector(batch, table[k].expand(len(batch), -1)),
                                                              batch.gt) for k in range(len(table))], 1)
        self.train(was_training)
        return losses

    @torch.no_grad()
    def detect(self, batch: Batch, sensors: SensorConfig | None = None, budget: float | None = None,
               price: float = 0.0) -> tuple[list[Detections], list[FrameRecord]]:
        """Eval-mode detections of a batch under a static configuration (default: `sensors` of the
        hyperparameters) or, with a budget, the gate's choice; sensors not present in a frame turned off. One
        FrameRecord per frame (its cost from the latency table; FLOPs and ms are measured by the caller)."""
        was_training = self.training
        self.eval()
        try:
            decisions, probs = self.choose(batch, sensors, budget, price)
            detections = self.detector.head.decode(self.detector(batch, decisions))
        finally:
            self.train(was_training)
        table = self.latency_table(batch)
        full = config_cost(table, configurations()[0])
        records = []
        for b, row in enumerate(decisions.tolist()):
            used = SensorConfig.from_indices(row)
            token = batch.meta[b].sample_token if b < len(batch.meta) else ""
            gate_probs = {s: [round(float(v), 4) for v in p[b]] for s, p in probs.items()} if probs else None
            records.append(FrameRecord(token, used.camera, used.lidar, used.radar,
                                       config_cost(table, used) / full, gate_probs))
        return detections, records
