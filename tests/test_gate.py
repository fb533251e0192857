"""The adaptive gate (fusion/gate.py) and what it drives: the choice respects `present`, reads sensor data only,
passes gradients through its relaxation, spends less at a lower budget; an unchosen branch never runs; per-frame
FLOPs in the records are that frame's own; the latency table fits and tracks end-to-end time."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fusion.cost import SHARED, config_cost, fit_latency_table, relative_costs, table_from_dict, table_to_dict
from fusion.detector import SensorConfig
from fusion.gate import GLIMPSE_SENSOR, Gate, calibrate_price, configurations, glimpses
from fusion.module import GateFusionModule
from sensors.frame import FrameMeta
from sensors.names import MODES, SENSORS
from tests.test_model import TINY, make_batch

COSTS = {"camera=low": 2.0, "camera=high": 8.0, "lidar=coarse": 1.0, "lidar=fine": 4.0, "radar=on": 0.5,
         "shared": 1.5}


def gated(**kw) -> GateFusionModule:
    torch.manual_seed(0)
    return GateFusionModule(**TINY, gate=True, gate_costs=COSTS, **kw)


def test_configurations_costs_and_table_round_trip():
    configs = configurations()
    assert len(configs) == 17 and str(configs[0]) == "camera=high,lidar=fine,radar=on"
    table = table_from_dict(COSTS)
    assert table_to_dict(table) == COSTS and table[("camera", "off")] == 0.0
    costs = relative_costs(table, configs)
    assert costs[0] == 1.0 and costs.min() == pytest.approx((0.5 + 1.5) / (8 + 4 + 0.5 + 1.5))
    with pytest.raises(ValueError, match="missing \\['shared'\\]"):
        table_from_dict({k: v for k, v in COSTS.items() if k != "shared"})
    with pytest.raises(ValueError, match="radar=on must be > 0"):
        table_from_dict({**COSTS, "radar=on": 0})


def test_fitted_latency_table_recovers_an_additive_one():
    truth = table_from_dict(COSTS)
    measured = {c: config_cost(truth, c) * (1.0 + 0.01 * (i % 3 - 1)) for i, c in enumerate(configurations())}
    fitted = fit_latency_table(measured)
    for key in [(s, m) for s in SENSORS for m in MODES[s][1:]] + [SHARED]:
        assert fitted[key] == pytest.approx(truth[key], rel=0.1, abs=0.1), key
    for c, ms in measured.items():
        assert config_cost(fitted, c) == pytest.approx(ms, rel=0.05)


def test_gate_respects_present_and_never_turns_everything_off():
    m = gated().eval()
    batch = make_batch(B=4)
    batch.present[1] = torch.tensor([False, True, True])
    batch.present[2] = torch.tensor([False, False, True])
    batch.present[3] = torch.tensor([False, False, False])
    logits = m.gate(batch, torch.full((4,), 0.6))
    for price in (-50.0, 0.0, 0.3, 50.0):
        decisions, _ = m.choose(batch, budget=0.6, price=price)
        assert ((decisions > 0) <= batch.present).all(), price
        assert (decisions[:3] > 0).any(1).all() and (decisions[3] == 0).all()
    assert torch.isinf(logits[2, :-1]).all() and torch.isfinite(logits[2, -1])  # radar alone is the last config
    for _ in range(20):  # a training sample obeys the same mask
        decisions, weights = m.gate.selection(m.gate.sample(logits, 1.0))
        assert ((decisions[:3] > 0) <= batch.present[:3]).all()
        assert torch.allclose(weights, torch.ones_like(weights))


def test_the_recorded_probabilities_are_those_the_choice_was_made_at():
    """At a high price the cheapest configuration wins, and the probabilities recorded with it (what the report
    draws) say so: the radar alone, each chosen mode the likeliest of its sensor; the same logits without the price
    give other probabilities."""
    m = gated().eval()
    batch = make_batch(B=2)
    decisions, probs = m.choose(batch, budget=0.6, price=50.0)
    assert decisions.tolist() == [[0, 0, 1]] * 2
    for i, s in enumerate(SENSORS):
        assert torch.equal(probs[s].argmax(1), decisions[:, i]), s
    assert (probs["camera"][:, 0] > 0.9).all() and (probs["radar"][:, 1] > 0.5).all()
    _, free = m.choose(batch, budget=0.6, price=0.0)
    assert not torch.allclose(free["camera"], probs["camera"])


def test_gate_reads_sensor_data_only():
    """Shuffling the frames' metadata (scene, conditions, faults, tokens) leaves the gate's outputs bit-identical;
    changing the images changes them."""
    m = gated().eval()
    batch = make_batch(B=3)
    budget = torch.full((3,), 0.5)
    ref = m.gate(batch, budget)
    metas = [FrameMeta(f"tok{i}", f"scene-{i}", 0, conditions=("night", "fog") if i else ("day",),
                       faults=("CAM_FRONT",) if i == 2 else ()) for i in range(3)]
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        batch.meta = [metas[i] for i in order]
        assert torch.equal(m.gate(batch, budget), ref)
    assert torch.equal(glimpses(dataclasses.replace(batch, meta=[])), glimpses(batch))
    batch.camera.images = batch.camera.images * 0.2
    assert not torch.equal(m.gate(batch, budget), ref)


def test_a_frames_glimpse_does_not_depend_on_the_frames_batched_with_it():
    """Each frame's glimpse (and so its choice) is the same alone, in a batch, and in a batch in another order: the
    gate is trained on batches of 4, its price calibrated on batches of 8 and it runs at batch size 1."""
    batch = make_batch(B=3, k=80, extent=40.0)  # 3,200 LiDAR points a frame: a batch-wide stride would differ
    together = glimpses(batch)
    for order in ([0], [1], [2], [2, 0, 1], [1, 2]):
        alone = glimpses(batch.select(torch.tensor(order)))
        assert torch.allclose(alone, together[order], atol=1e-6), order


def test_own_glimpse_a_dead_or_degraded_sensor_moves_only_the_configurations_that_run_it():
    """gate_own_glimpse: a dark camera, a dead camera or a dead LiDAR changes the estimates of the configurations
    that run that sensor and leaves the others' bit-identical; the shared glimpse (the default) moves them all."""
    batch = make_batch(B=3)
    own, shared = gated(gate_own_glimpse=True).eval(), gated().eval()
    table = own.gate.table
    dark = dataclasses.replace(batch, camera=dataclasses.replace(batch.camera, images=batch.camera.images * 0.2))

    def dead(i: int):
        return dataclasses.replace(batch, present=batch.present & (torch.arange(3) != i))

    for sensor, changed in ((0, dark), (0, dead(0)), (1, dead(1))):
        runs = table[:, sensor] > 0
        before, after = own.gate.risk(batch), own.gate.risk(changed)
        assert torch.equal(before[:, ~runs], after[:, ~runs]), sensor
        assert not torch.allclose(before[:, runs], after[:, runs]), sensor
        assert not torch.allclose(shared.gate.risk(batch)[:, ~runs], shared.gate.risk(changed)[:, ~runs]), sensor
    # each configuration reads the row of its own sensor set: the same output as the MLP on the masked glimpse
    g = glimpses(batch)
    for k in (0, 12, 16):
        keep = (table[k] > 0)[GLIMPSE_SENSOR].float()
        assert torch.allclose(own.gate.risk(batch)[:, k], own.gate.mlp(g * keep)[:, k], atol=1e-6), k


def test_gradients_reach_the_gate_through_the_relaxation():
    """The straight-through weights carry the detection loss of each frame to the gate (and the penalty too)."""
    m = gated()
    batch = make_batch(B=2)
    logits = m.gate(batch, torch.full((2,), 0.5))
    decisions, weights = m.gate.selection(m.gate.sample(logits, 0.5))
    m.detector.head.loss(m.detector(batch, decisions, weights), batch.gt)["loss"].backward()
    grads = [p.grad for p in m.gate.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    m.zero_grad()
    (m.gate.expected_cost(m.gate(batch, torch.full((2,), 0.5))).mean() - 0.5).abs().backward()
    assert float(m.gate.mlp[-1].weight.grad.abs().sum()) > 0


def test_lower_budget_lowers_mean_cost_and_calibration_meets_it():
    m = gated().eval()
    batch = make_batch(B=6)
    with torch.no_grad():
        m.gate.mlp[-1].bias.copy_(torch.linspace(0, 2, 17))  # predicted losses lowest for the dearer configurations
        costs = [float(m.gate.costs[m.gate.decide(m.gate(batch, torch.full((6,), b)))].mean())
                 for b in (1.0, 0.8, 0.6, 0.4, 0.25)]
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1], costs
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 17, generator=gen) * 2
    means = []
    for budget in (m.gate.min_budget + 0.02, 0.4, 0.6, 0.8, 1.0):
        price = calibrate_price(m.gate, logits, budget)
        mean = float(m.gate.costs[m.gate.decide(logits, price)].mean())
        means.append(mean)
        assert mean == pytest.approx(budget, rel=0.1), budget
    assert means == sorted(means)
    with pytest.raises(ValueError, match="outside"):
        calibrate_price(m.gate, logits, 0.05)


def test_a_branch_no_frame_chose_never_runs():
    m = gated().eval()
    calls = {s: 0 for s in SENSORS}
    for s in SENSORS:
        getattr(m.detector, s).register_forward_hook(lambda *a, s=s: calls.__setitem__(s, calls[s] + 1))
    batch = make_batch(B=3)
    m.detect(batch, SensorConfig.parse("lidar=fine,radar=on"))
    assert calls == {"camera": 0, "lidar": 1, "radar": 1}
    batch.present[:, 0] = False
    m.detect(batch, budget=1.0, price=-100.0)  # every frame takes its most expensive allowed configuration
    assert calls["camera"] == 0 and calls["lidar"] == 2


def test_records_count_each_frames_own_flops_in_a_mixed_batch():
    """run_model's per-frame GFLOPs equal a FLOP count of that frame run alone, with frames choosing different
    configurations in one batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from datasets.evaluation import run_model

    m = gated().eval()
    batch = make_batch(B=3)
    batch.present[1, 0] = False
    batch.present[2] = torch.tensor([False, False, True])
    _, records, _, measured = run_model(m, [batch], budget=0.9, price=-100.0, warmup=0)  # the dearest allowed
    assert [(r.camera, r.lidar, r.radar) for r in records] == [("high", "fine", "on"), ("off", "fine", "on"),
                                                               ("off", "off", "on")]
    for b in range(3):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            m.detect(batch.select(torch.tensor([b])), budget=0.9, price=-100.0)
        assert measured[b]["gflops"] == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-9)
    assert measured[0]["gflops"] != measured[2]["gflops"]
    assert records[2].gate_probs is not None and sum(records[2].gate_probs["radar"]) == pytest.approx(1.0, abs=1e-3)


def test_regression_gate_learns_per_frame_losses_and_leaves_the_detector_alone():
    """The "regression" gate: its fit loss reaches the gate's MLP and nothing of the detector, the penalty reaches
    the price alone, and the detector's decisions are the static recipe's."""
    m = gated(gate_start=0.0)

    class Trainer:  # what gate_progress reads
        estimated_stepping_batches = 10
        global_step = 5

    m._trainer = Trainer()
    m.log_dict = m.log = lambda *a, **k: None
    batch = make_batch(B=4)
    decisions, weights, penalty = m.training_decisions(batch)
    assert weights is None and penalty is None
    outputs = m.detector(batch, decisions)
    fit, penalty = m.gate_regression(batch, decisions, outputs, 0.5)
    target = m.detector.head.frame_losses(outputs, batch.gt)
    assert target.shape == (4,) and torch.isfinite(target).all()
    (fit + penalty).backward()
    assert float(m.gate.mlp[0].weight.grad.abs().sum()) > 0 and m.gate.price_scale.grad is not None
    assert all(p.grad is None for p in m.detector.parameters())
    # the per-frame losses are the head's loss of each frame alone
    one = m.detector.head.loss(outputs.frame(1), batch.gt[1:2])
    assert float(target[1]) == pytest.approx(float(one["loss"]), rel=1e-5)


def test_configuration_losses_and_the_offset_that_removes_the_gates_mean_error():
    """configuration_losses: each frame's loss under every configuration, as a forward under that configuration
    gives it; Gate.offset shifts the predicted losses (and so the choice), is not saved, and leaves a "gumbel"
    gate's utilities alone."""
    m = gated().eval()
    batch = make_batch(B=2)
    losses = m.configuration_losses(batch)
    assert losses.shape == (2, 17) and torch.isfinite(losses).all()
    k = 12  # camera=off,lidar=fine,radar=on
    one = m.detector.head.frame_losses(m.detector(batch, m.gate.table[k].expand(2, -1)), batch.gt)
    assert torch.allclose(losses[:, k], one)
    before = m.gate.risk(batch)
    offset = torch.zeros(17)
    offset[k] = -100.0
    m.gate.offset.copy_(offset)
    assert torch.allclose(m.gate.risk(batch), before + offset)
    logits = m.gate(batch, torch.full((2,), 1.0))
    assert m.gate.decide(logits).tolist() == [k, k]
    assert "gate.offset" not in m.state_dict()
    g = Gate(torch.linspace(1.0, 0.1, 17), estimator="gumbel")
    g.offset.fill_(5.0)
    assert torch.allclose(g.risk(batch), g.mlp(glimpses(batch)))


def test_eval_removes_the_gates_offsets_and_reuses_an_operating_point(tiny_gated_run, tiny_gate_budget, tiny_world,
                                                                      tmp_path):
    """eval.py --budget measures the gate's offsets on training frames (--gate-offsets) before calibrating the price;
    --operating-point takes both from an earlier run's metrics.json and reproduces its choices; misuse is an error
    naming the problem."""
    import eval as evaluate

    ckpt, b = str(tiny_gated_run / "checkpoints" / "last.ckpt"), str(tiny_gate_budget)
    common = ["--ckpt", ckpt, "--dataroot", str(tiny_world), "--limit", "3", "--num-workers", "0", "--measure-frames",
              "0", "--no-per-condition"]
    first = evaluate.main(common + ["--budget", b, "--gate-offsets", "6", "--calibration-frames", "8", "--out",
                                    str(tmp_path / "a")])
    assert len(first["gate_offsets"]) == 17 and any(v != 0.0 for v in first["gate_offsets"].values())
    point = str(tmp_path / "a" / "metrics.json")
    again = evaluate.main(common + ["--budget", b, "--operating-point", point, "--out", str(tmp_path / "b")])
    assert again["price"] == first["price"] and again["gate_offsets"] == first["gate_offsets"]
    choices = [[(r["camera"], r["lidar"], r["radar"]) for r in map(json.loads, open(tmp_path / d / "records.jsonl"))]
               for d in ("a", "b")]
    assert choices[0] == choices[1]
    with pytest.raises(ValueError, match=f"its budget is {b}"):
        evaluate.main(common + ["--budget", "0.3", "--operating-point", point, "--out", str(tmp_path / "c")])
    with pytest.raises(ValueError, match="need --budget"):
        evaluate.main(common + ["--gate-offsets", "6", "--out", str(tmp_path / "c")])
    with pytest.raises(ValueError, match="cannot be combined"):
        evaluate.main(common + ["--budget", b, "--operating-point", point, "--price", "1.0", "--out",
                                str(tmp_path / "c")])


def test_paired_regression_fits_loss_differences_of_a_second_configuration_of_the_same_frame():
    """gate_paired: each frame also runs (without gradients) under a second random configuration, and the gate's
    predicted difference is pulled to the measured one; the detector still gets no gradient from the gate."""
    m = gated(gate_start=0.0, gate_paired=True)
    m.log_dict = m.log = lambda *a, **k: None
    batch = make_batch(B=4)
    decisions = m.static.decisions(batch.present)
    outputs = m.detector(batch, decisions)
    calls = []
    m.detector.encode = (lambda f: lambda b, d, *a: calls.append(d.clone()) or f(b, d, *a))(m.detector.encode)
    torch.manual_seed(1)
    fit, penalty = m.gate_regression(batch, decisions, outputs, 0.5)
    assert len(calls) == 1 and (calls[0] > 0).any(1).all()  # one more pass, a configuration per frame
    (fit + penalty).backward()
    assert float(m.gate.mlp[0].weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in m.detector.parameters())
    # the fit is the plain one plus the difference term: with the plain one alone it is smaller
    plain = gated(gate_start=0.0)
    plain.load_state_dict(m.state_dict())
    plain.log_dict = plain.log = lambda *a, **k: None
    torch.manual_seed(1)
    fit_plain, _ = plain.gate_regression(batch, decisions, outputs, 0.5)
    assert float(fit) > float(fit_plain) > 0
    with pytest.raises(ValueError, match="gate_paired needs gate_estimator 'regression'"):
        gated(gate_paired=True, gate_estimator="gumbel")
    with pytest.raises(ValueError, match="gate_chooses_training needs gate_estimator 'regression'"):
        gated(gate_chooses_training=1.0, gate_estimator="gumbel")
    with pytest.raises(ValueError, match="gate_chooses_training must be in"):
        gated(gate_chooses_training=1.5)


def test_a_regression_gate_that_chooses_training_gives_the_detector_its_sampled_choices():
    """gate_chooses_training: in the gate's phase that share of the training frames runs a configuration sampled from
    the gate's logits at the batch's budget (a frame's present sensors only), without gradient, the rest the static
    configuration; before the phase, and without the option, the static configuration (no dropout here)."""
    class Trainer:  # what gate_progress reads
        estimated_stepping_batches = 10
        global_step = 5

    batch = make_batch(B=6)
    batch.present[0, 0] = False  # frame 0 has no camera
    for chooses, start in ((1.0, 0.0), (0.5, 0.0), (0.0, 0.0), (1.0, 0.9)):
        m = gated(gate_start=start, train_sensor_dropout=0.0, gate_chooses_training=chooses)
        m.trainer = None
        m._trainer = Trainer()
        favoured = 9  # make the gate predict a far lower loss for one configuration that runs the camera
        assert int(m.gate.table[favoured, 0]) > 0
        risk = torch.zeros(6, 17)
        risk[:, favoured] = -100.0
        m.gate.risk = lambda b, risk=risk: risk
        decisions, weights, penalty = m.training_decisions(batch)
        assert weights is None and penalty is None and not decisions.requires_grad
        if chooses == 0.5:  # each frame either the gate's sample or the static configuration, both over many draws
            static = m.static.decisions(batch.present)
            kinds = set()
            for _ in range(20):
                decisions = m.training_decisions(batch)[0]
                for f in range(1, 6):
                    kinds.add("gate" if torch.equal(decisions[f], m.gate.table[favoured])
                              else "static" if torch.equal(decisions[f], static[f]) else "other")
            assert kinds == {"gate", "static"}
        elif chooses and start == 0.0:
            assert (decisions[1:] == m.gate.table[favoured]).all()
            # frame 0 cannot run the camera: its sample is among the configurations without one
            assert int(decisions[0, 0]) == 0 and bool((decisions[0] > 0).any())
        else:
            assert torch.equal(decisions, m.static.decisions(batch.present))


def test_gumbel_gate_training_samples_and_penalises_cost():
    """In the gate's phase a "gumbel" training step draws a budget b in [cheapest, 1], samples the gate and adds the
    penalty |mean expected cost - b| (fusion/module.py), the expected cost of a frame being softmax(logits) @ the
    configurations' costs: its gradient lowers the expected cost of a batch over budget and raises that of one
    under it."""
    m = gated(gate_start=0.0, train_sensor_dropout=0.0, gate_estimator="gumbel")

    class Trainer:  # what gate_progress reads
        estimated_stepping_batches = 10
        global_step = 5

    m.trainer = None
    m._trainer = Trainer()
    m.log_dict = lambda *a, **k: None
    seen = {}
    draw, forward = m.gate_budget_and_tau, m.gate.forward

    def drawn(progress):
        seen["progress"], (seen["budget"], seen["tau"]) = progress, draw(progress)
        return seen["budget"], seen["tau"]

    def logits_of(batch, budget):
        seen["budgets"], seen["logits"] = budget, forward(batch, budget)
        seen["logits"].retain_grad()
        return seen["logits"]

    m.gate_budget_and_tau, m.gate.forward = drawn, logits_of
    batch, costs = make_batch(B=4), m.gate.costs
    decisions, weights, penalty = m.training_decisions(batch)
    assert weights is not None and weights.requires_grad
    assert ((decisions > 0) <= batch.present).all()
    t0, t1 = m.hparams.gate_tau
    assert seen["progress"] == 0.5 and seen["tau"] == pytest.approx(t0 * (t1 / t0) ** 0.5)
    assert m.gate.min_budget <= seen["budget"] <= 1 and torch.equal(seen["budgets"], torch.full((4,), seen["budget"]))
    expected = float((seen["logits"].detach().softmax(1) * costs).sum(1).mean())
    assert penalty.item() == pytest.approx(abs(expected - seen["budget"]), rel=1e-6)

    radar_only = batch.present.clone()
    radar_only[0] = torch.tensor([False, False, True])  # a frame whose one allowed configuration is radar alone
    mixed = dataclasses.replace(batch, present=radar_only)
    for frames, budget, sign in ((batch, m.gate.min_budget, 1.0), (batch, 1.0, -1.0), (mixed, 0.2, 1.0)):
        m.gate_budget_and_tau = lambda progress, b=budget: (b, 1.0)
        _, _, penalty = m.training_decisions(frames)
        logits = seen["logits"]
        p = logits.softmax(1).detach()
        frame_cost = (p * costs).sum(1)  # (B,)
        if frames is mixed:  # frames on both sides of the budget: the batch's mean is penalised, not each frame
            assert frame_cost.min() < budget < frame_cost.max()
        assert penalty.item() == pytest.approx(sign * (float(frame_cost.mean()) - budget), rel=1e-6)
        assert penalty.item() > 0
        penalty.backward()
        assert logits.grad is not None
        # d |mean_b E_b - budget| / d logit_bk = sign * p_bk (cost_k - E_b) / B
        assert torch.allclose(logits.grad, sign * p * (costs - frame_cost[:, None]) / 4, atol=1e-7)
        stepped = ((logits.detach() - 0.1 * logits.grad).softmax(1) * costs).sum(1).mean()
        assert sign * (float(stepped) - float(frame_cost.mean())) < 0  # a descent step moves the cost to the budget
