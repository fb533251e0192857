"""The simulated world of one scene: what each detection class looks like to the sensors (SPECS), the ego's motion,
the constant-velocity objects (placed so that every class is seen), unannotated roadside scenery, and the scene's
sensor-fault events. Each maker draws from its own RNG stream, so a scene depends only on (seed, scene index)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from datasets.synthetic.config import KEYFRAME_DT, TRAFFIC_LEVELS, WorldConfig
from sensors.geometry import apply, rotate, transform, yaw_to_quaternion
from sensors.names import ATTRIBUTES, CAMERAS, CLASSES, RADARS, SENSORS

CLASS_RANGE = {"car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0, "construction_vehicle": 50.0,
               "pedestrian": 40.0, "motorcycle": 40.0, "bicycle": 40.0, "traffic_cone": 30.0, "barrier": 30.0}
ANNOTATION_RADIUS = 80.0


@dataclass(frozen=True)
class ClassSpec:
    """How one detection class looks to every sensor. size: (l, w, h) metres; speed: (lo, hi) m/s when moving;
    reflectivity: LiDAR intensity scale (kept by RETROREFLECTIVE classes; painted bodies get theirs from their colour,
    see material_reflectivity); radar_p / radar_lambda: detection probability and extra returns; rcs: mean dBsm."""

    category: str
    size: tuple[float, float, float]
    speed: tuple[float, float]
    p_moving: float
    weight: float
    reflectivity: float
    radar_p: float
    radar_lambda: float
    rcs: float
    colour: tuple[int, int, int]


SPECS: dict[str, ClassSpec] = {
    "car": ClassSpec("vehicle.car", (4.6, 1.95, 1.73), (2.0, 12.0), 0.55, 0.34, 45, 0.92, 1.5, 8, (60, 90, 160)),
    "truck": ClassSpec("vehicle.truck", (6.9, 2.5, 2.8), (2.0, 10.0), 0.5, 0.07, 50, 0.97, 3.0, 16, (225, 225, 215)),
    "construction_vehicle": ClassSpec("vehicle.construction", (6.4, 2.8, 3.2), (0.5, 3.0), 0.3, 0.03, 55, 0.97, 2.5,
                                      15, (235, 190, 20)),
    "bus": ClassSpec("vehicle.bus.rigid", (11.0, 2.9, 3.5), (2.0, 10.0), 0.5, 0.03, 50, 0.98, 4.0, 20, (200, 40, 35)),
    "trailer": ClassSpec("vehicle.trailer", (12.0, 2.9, 3.9), (2.0, 8.0), 0.3, 0.03, 40, 0.97, 3.0, 18,
                         (130, 110, 90)),
    "barrier": ClassSpec("movable_object.barrier", (0.5, 2.5, 0.98), (0.0, 0.0), 0.0, 0.10, 70, 0.08, 0.3, 2,
                         (220, 30, 30)),
    "motorcycle": ClassSpec("vehicle.motorcycle", (2.1, 0.77, 1.47), (3.0, 12.0), 0.6, 0.04, 35, 0.5, 0.3, 2,
                            (120, 20, 25)),
    "bicycle": ClassSpec("vehicle.bicycle", (1.7, 0.6, 1.28), (2.0, 6.0), 0.6, 0.05, 30, 0.3, 0.2, -2, (30, 150, 60)),
    "pedestrian": ClassSpec("human.pedestrian.adult", (0.73, 0.67, 1.77), (0.8, 1.8), 0.6, 0.21, 25, 0.25, 0.1, -6,
                            (60, 60, 150)),
    "traffic_cone": ClassSpec("movable_object.trafficcone", (0.41, 0.41, 1.07), (0.0, 0.0), 0.0, 0.10, 120, 0.05,
                              0.0, -10, (255, 120, 0)),
}
VEHICLES = ("car", "truck", "construction_vehicle", "bus", "trailer")
CYCLES = ("motorcycle", "bicycle")


def yaw_transform(translation, yaw: float) -> np.ndarray:
    """a_T_b of a frame b at `translation`, rotated by `yaw` about +z."""
    return transform(yaw_to_quaternion(yaw), translation)



@dataclass
class EgoMotion:
    """Constant speed and yaw rate (a straight line or a gentle arc), ego z = 0."""

    x0: float
    y0: float
    yaw0: float
    speed: float
    yaw_rate: float

    def pose(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """t (T,) seconds -> x, y, yaw (T,) in the global frame."""
        t = np.asarray(t, dtype=np.float64)
        yaw = self.yaw0 + self.yaw_rate * t
        if abs(self.yaw_rate) < 1e-9:
            return self.x0 + self.speed * t * np.cos(self.yaw0), self.y0 + self.speed * t * np.sin(self.yaw0), yaw
        r = self.speed / self.yaw_rate
        return (self.x0 + r * (np.sin(yaw) - np.sin(self.yaw0)), self.y0 - r * (np.cos(yaw) - np.cos(self.yaw0)), yaw)

    def global_T_ego(self, t: float) -> np.ndarray:
        x, y, yaw = self.pose(t)
        return yaw_transform([float(x), float(y), 0.0], float(yaw))


@dataclass
class Objects:
    """K constant-velocity objects. p0: (K, 2) global xy at t = 0; vel: (K, 2); size: (K, 3) l, w, h; yaw: (K,);
    cls: (K,) index into CLASSES; attribute: (K,) index into ATTRIBUTES or -1; span: (K, 2) first/last annotated
    key-frame index; category: K category names; colour: (K, 3) body RGB; reflectivity: (K,) LiDAR intensity scale of
    the body (from its paint, see material_reflectivity), None: the class's SPECS value; rcs: (K,) radar
    cross-section (dBsm) of the object, None: the class's SPECS value."""

    p0: np.ndarray
    vel: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    cls: np.ndarray
    attribute: np.ndarray
    span: np.ndarray
    category: list[str]
    colour: np.ndarray
    reflectivity: np.ndarray | None = None
    rcs: np.ndarray | None = None

    def boxes(self, t: float) -> np.ndarray:
        """(K, 9) global boxes [x, y, z, l, w, h, yaw, vx, vy] at time t (s)."""
        xy = self.p0 + self.vel * t
        return np.concatenate([xy, self.size[:, 2:3] / 2, self.size, self.yaw[:, None], self.vel], 1)


def boxes_in_frame(boxes: np.ndarray, a_T_global: np.ndarray) -> np.ndarray:
    """(K, 9) global boxes -> frame a (a yaw-only rotation of the global frame)."""
    out = boxes.copy()
    out[:, :3] = apply(a_T_global, boxes[:, :3])
    out[:, 6] = boxes[:, 6] + math.atan2(a_T_global[1, 0], a_T_global[0, 0])
    v = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], 1)
    out[:, 7:9] = rotate(a_T_global, v)[:, :2]
    return out


def make_ego(rng: np.random.Generator) -> EgoMotion:
    speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(3.0, 10.0))
    yaw_rate = float(rng.uniform(-0.05, 0.05)) if rng.random() < 0.5 else 0.0
    return EgoMotion(float(rng.uniform(300, 1700)), float(rng.uniform(300, 1700)), float(rng.uniform(-np.pi, np.pi)),
                     speed, yaw_rate)


def _occludes(xy, radius, target_xy, target_radius, eye) -> bool:
    """Whether a disc (xy, radius) is nearer to `eye` than the target disc and overlaps it in bearing."""
    d = math.hypot(xy[0] - eye[0], xy[1] - eye[1])
    dt = math.hypot(target_xy[0] - eye[0], target_xy[1] - eye[1])
    if d >= dt:
        return False
    half = math.asin(min(1.0, radius / max(d, 1e-6))) + math.asin(min(1.0, target_radius / max(dt, 1e-6)))
    diff = math.atan2(xy[1] - eye[1], xy[0] - eye[0]) - math.atan2(target_xy[1] - eye[1], target_xy[0] - eye[0])
    return abs((diff + math.pi) % (2 * math.pi) - math.pi) < half + 0.02



@dataclass
class _Layout:
    """The ego's path while make_objects places objects, and what it has placed so far. key_t: (T,) key-frame times;
    kx, ky, kyaw: (T,) ego pose at them; grid: (G,) a 4x finer time grid with the ego's xy there, ego_xy (G, 2);
    trajs / radii: placed trajectories on the grid (G, 2) and their radii; protected: (anchor frame, p0, vel, radius)
    of the guaranteed objects, which the extras must not hide."""

    key_t: np.ndarray
    kx: np.ndarray
    ky: np.ndarray
    kyaw: np.ndarray
    grid: np.ndarray
    ego_xy: np.ndarray
    trajs: list = field(default_factory=list)
    radii: list = field(default_factory=list)
    protected: list = field(default_factory=list)


def make_objects(rng: np.random.Generator, ego: EgoMotion, n_samples: int, traffic: str,
                 config: WorldConfig) -> Objects:
    """One object of every class near the ego (inside its class range and not occluded at its anchor key frame),
    then extra objects drawn by class frequency; rejection sampling keeps every trajectory clear of the ego and of
    other objects, and keeps the extras from hiding the guaranteed objects at their anchor frames."""
    key_t = np.arange(n_samples) * KEYFRAME_DT
    grid = np.linspace(0.0, key_t[-1], 4 * (n_samples - 1) + 1)
    ex, ey, _ = ego.pose(grid)
    kx, ky, kyaw = ego.pose(key_t)
    layout = _Layout(key_t, kx, ky, kyaw, grid, np.stack([ex, ey], 1))
    lo, hi = config.objects_per_traffic[TRAFFIC_LEVELS.index(traffic)]
    weights = np.array([SPECS[c].weight for c in CLASSES])
    extra = rng.choice(len(CLASSES), size=int(rng.integers(lo, hi + 1)), p=weights / weights.sum())
    wanted = [(i, True) for i in range(len(CLASSES))] + [(int(i), False) for i in extra]
    rows = []
    for ci, guaranteed in wanted:
        name = CLASSES[ci]
        for _ in range(200):
            row = _try_place(rng, layout, name, guaranteed)
            if row is not None:
                rows.append(row)
                break
        else:
            if guaranteed:
                raise RuntimeError(f"could not place a {name} in the scene (seed {config.seed}); this is a bug")
    return _dress_objects(rng, rows)


def _heading(rng: np.random.Generator, name: str, ego_yaw: float) -> float:
    """Heading of a new object: pedestrians and cones any way, barriers across or along the road, the rest mostly
    along the road (either way), sometimes across it."""
    if name == "pedestrian":
        return rng.uniform(-np.pi, np.pi)
    if name == "barrier":
        return ego_yaw + np.pi / 2 + rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05)
    if name == "traffic_cone":
        return rng.uniform(-np.pi, np.pi)
    turn = rng.choice([0.0, np.pi]) if rng.random() < 0.85 else rng.choice([np.pi / 2, -np.pi / 2])
    return ego_yaw + turn + rng.normal(0, 0.05)


def _try_place(rng: np.random.Generator, layout: _Layout, name: str, guaranteed: bool) -> tuple | None:
    """One rejection-sampling draw of an object of class `name`: its row (name, p0, vel, size, heading, moving,
    annotated key-frame span), recorded in `layout`, or None when it comes too close to the ego or to a placed
    object, hides (or, guaranteed, is hidden by) a guaranteed object, or is annotated in fewer than two key frames."""
    spec, key_t, kx, ky, kyaw = SPECS[name], layout.key_t, layout.kx, layout.ky, layout.kyaw
    k = int(rng.integers(len(key_t)))
    if guaranteed:
        r = rng.uniform(4.0, (0.75 if name in VEHICLES else 0.5) * CLASS_RANGE[name])
    else:
        r = rng.uniform(3.0, min(68.0, CLASS_RANGE[name] + 20.0))
    bearing = rng.uniform(-np.pi, np.pi)
    anchor = np.array([kx[k] + r * np.cos(kyaw[k] + bearing), ky[k] + r * np.sin(kyaw[k] + bearing)])
    size = np.array(spec.size) * rng.uniform(0.9, 1.1, 3)
    heading = _heading(rng, name, kyaw[k])
    moving = rng.random() < spec.p_moving
    speed = rng.uniform(*spec.speed) if moving else 0.0
    vel = speed * np.array([np.cos(heading), np.sin(heading)])
    p0 = anchor - vel * key_t[k]
    traj = p0 + vel * layout.grid[:, None]
    radius = 0.5 * math.hypot(size[0], size[1])
    if np.min(np.linalg.norm(traj - layout.ego_xy, axis=1)) < radius + 2.6:
        return None
    if layout.trajs:
        d = np.linalg.norm(np.stack(layout.trajs) - traj[None], axis=2).min(1)
        if np.any(d < radius + np.array(layout.radii) + 0.3):
            return None
    if any(_occludes(p0 + vel * key_t[pk], radius, pp0 + pvel * key_t[pk], prad, (kx[pk], ky[pk]))
           or (guaranteed and _occludes(pp0 + pvel * key_t[k], prad, anchor, radius, (kx[k], ky[k])))
           for pk, pp0, pvel, prad in layout.protected):
        return None
    dist = np.linalg.norm(p0 + vel * key_t[:, None] - np.stack([kx, ky], 1), axis=1)
    inside = np.flatnonzero(dist <= ANNOTATION_RADIUS)
    if len(inside) == 0 or inside[-1] - inside[0] < 1:
        return None
    layout.trajs.append(traj)
    layout.radii.append(radius)
    if guaranteed:
        layout.protected.append((k, p0, vel, radius))
    return name, p0, vel, size, heading, moving, (int(inside[0]), int(inside[-1]))


def _attribute_and_look(rng: np.random.Generator, name: str, size: np.ndarray, moving: bool):
    """(attribute name or None, category name, body colour (3,)) of a placed object; sitting pedestrians and
    children get lower (size is changed in place)."""
    spec = SPECS[name]
    category = spec.category
    if name in VEHICLES:
        attr = "vehicle.moving" if moving else ("vehicle.parked" if rng.random() < 0.75 else "vehicle.stopped")
        if name == "bus" and size[0] > 11.5 and rng.random() < 0.5:
            category = "vehicle.bus.bendy"
    elif name == "pedestrian":
        attr = "pedestrian.moving" if moving else (
            "pedestrian.standing" if rng.random() < 0.8 else "pedestrian.sitting_lying_down")
        if attr == "pedestrian.sitting_lying_down":
            size[2] *= 0.6
        u = rng.random()
        if u < 0.1:
            category, size[2] = "human.pedestrian.child", size[2] * 0.75
        elif u < 0.15:
            category = "human.pedestrian.construction_worker"
        elif u < 0.2:
            category = "human.pedestrian.police_officer"
    elif name in CYCLES:
        attr = "cycle.with_rider" if moving or rng.random() < 0.2 else "cycle.without_rider"
    else:
        attr = None
    if name == "car":
        palette = np.array([[60, 90, 160], [170, 170, 175], [140, 25, 30], [30, 30, 35], [230, 230, 230]])
        colour = palette[rng.integers(len(palette))]
    else:
        colour = np.array(spec.colour)
    return attr, category, colour


def _dress_objects(rng: np.random.Generator, rows: list[tuple]) -> Objects:
    """Objects from the placed rows of make_objects: attributes, categories, paint, LiDAR reflectivity and rcs."""
    p0s, vels, sizes, yaws, clss, attrs, spans, cats, colours = [], [], [], [], [], [], [], [], []
    for name, p0, vel, size, heading, moving, span in rows:
        attr, category, colour = _attribute_and_look(rng, name, size, moving)
        p0s.append(p0), vels.append(vel), sizes.append(size), yaws.append(heading), clss.append(CLASSES.index(name))
        attrs.append(ATTRIBUTES.index(attr) if attr else -1), spans.append(span), cats.append(category)
        colours.append(colour)
    colours = np.array(colours, dtype=np.float64).reshape(-1, 3)
    clss = np.array(clss, dtype=np.int64)
    reflectivity = material_reflectivity(rng, clss, colours)
    rcs = spec_values(clss, "rcs") + rng.normal(0.0, RCS_OBJECT_SIGMA, len(clss))
    return Objects(np.array(p0s), np.array(vels), np.array(sizes), np.array(yaws), clss,
                   np.array(attrs), np.array(spans), cats, colours, reflectivity, rcs)


# decals: LiDAR tells where, the camera tells what, as on real roads.
RETROREFLECTIVE = ("traffic_cone", "barrier")
RCS_OBJECT_SIGMA = 3.0  # dB, per object (aspect and shape)
RCS_POINT_SIGMA = 3.0  # dB, per return (fluctuation)


def spec_values(cls: np.ndarray, name: str) -> np.ndarray:
    """(K,) class indices -> (K,) float64 values of one ClassSpec field."""
    return np.array([getattr(SPECS[CLASSES[c]], name) for c in cls], np.float64)


def material_reflectivity(rng: np.random.Generator, cls: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(K,) LiDAR intensity scale per object: 8 + 40 x the paint's albedo (mean RGB / 255) + N(0, 6) for painted
    bodies, the class value of SPECS for RETROREFLECTIVE classes."""
    albedo = colour.mean(1) / 255.0
    painted = np.clip(8.0 + 40.0 * albedo + rng.normal(0.0, 6.0, len(cls)), 3.0, 80.0)
    retro = np.array([CLASSES[c] in RETROREFLECTIVE for c in cls], bool)
    return np.where(retro, spec_values(cls, "reflectivity"), painted)


# Unannotated roadside scenery, as on real streets, sized like the classes it can be mistaken for by a sparse LiDAR
# at range: hedges like cars, bins like traffic cones, posts (signs, parking meters) like pedestrians, low walls like
# barriers, lamp poles. LiDAR returns from them look like object returns; the camera tells them apart by day (green
# leaves, grey metal, concrete: no car paint, no cone stripes), hardly at night (unlit); radar sees metal strongly
# and leaves weakly. Fields: size ranges (l, w, h) in metres, weight, LiDAR reflectivity, radar detection
# probability, extra returns, rcs (dBsm), body colour.
@dataclass(frozen=True)
class SceneryKind:
    size: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    weight: float
    reflectivity: float
    radar_p: float
    radar_lambda: float
    rcs: float
    colour: tuple[int, int, int]


SCENERY = {
    "hedge": SceneryKind(((2.5, 5.5), (1.2, 2.2), (1.2, 2.0)), 0.3, 20.0, 0.3, 0.5, -8.0, (55, 105, 45)),
    "bin": SceneryKind(((0.45, 0.7), (0.45, 0.7), (0.9, 1.2)), 0.2, 30.0, 0.3, 0.0, -4.0, (45, 75, 55)),
    "post": SceneryKind(((0.2, 0.3), (0.2, 0.3), (1.4, 2.0)), 0.2, 35.0, 0.5, 0.0, 0.0, (150, 150, 155)),
    "pole": SceneryKind(((0.25, 0.35), (0.25, 0.35), (5.0, 8.0)), 0.15, 35.0, 0.6, 0.3, 5.0, (120, 120, 125)),
    "wall": SceneryKind(((3.0, 10.0), (0.25, 0.45), (0.8, 1.2)), 0.15, 30.0, 0.6, 1.0, 6.0, (165, 160, 150)),
}
SCENERY_PER_SCENE = (25, 45)


@dataclass
class Scenery:
    """S static unannotated structures: boxes (S, 9) global [x, y, z, l, w, h, yaw, 0, 0], kind names, colour (S, 3)
    and per-structure LiDAR reflectivity, radar detection probability, extra returns and rcs (S,)."""

    boxes: np.ndarray
    kind: list[str]
    colour: np.ndarray
    reflectivity: np.ndarray
    radar_p: np.ndarray
    radar_lambda: np.ndarray
    rcs: np.ndarray


def scenery_values(kinds: list[str], name: str) -> np.ndarray:
    """(S,) SCENERY kind names -> (S,) float64 values of one SceneryKind field."""
    return np.array([getattr(SCENERY[k], name) for k in kinds], np.float64)


def make_scenery(rng: np.random.Generator, ego: EgoMotion, objects: Objects, n_samples: int) -> Scenery:
    """Roadside structures along the ego's path (4.5-16 m to either side, up to 60 m ahead of or behind a point of
    it), aligned with the road, clear of the ego's path, of every object's trajectory and of each other."""
    grid = np.linspace(0.0, (n_samples - 1) * KEYFRAME_DT, 4 * (n_samples - 1) + 1)
    ex, ey, eyaw = ego.pose(grid)
    ego_xy = np.stack([ex, ey], 1)
    trajs = np.stack([objects.p0 + objects.vel * t for t in grid], 1) if len(objects.cls) else np.zeros((0, 1, 2))
    obj_r = 0.5 * np.hypot(objects.size[:, 0], objects.size[:, 1]) if len(objects.cls) else np.zeros(0)
    kinds = list(SCENERY)
    weights = np.array([SCENERY[k].weight for k in kinds])
    rows, placed = [], []
    for _ in range(int(rng.integers(SCENERY_PER_SCENE[0], SCENERY_PER_SCENE[1] + 1))):
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        spec = SCENERY[kind]
        for _ in range(50):
            i = int(rng.integers(len(grid)))
            along, side = rng.uniform(-60.0, 60.0), rng.choice([-1.0, 1.0]) * rng.uniform(4.5, 16.0)
            c, s_ = math.cos(eyaw[i]), math.sin(eyaw[i])
            xy = ego_xy[i] + along * np.array([c, s_]) + side * np.array([-s_, c])
            size = np.array([rng.uniform(*r) for r in spec.size])
            radius = 0.5 * math.hypot(size[0], size[1])
            if np.min(np.linalg.norm(ego_xy - xy, axis=1)) < radius + 3.0:
                continue
            if len(obj_r) and np.any(np.linalg.norm(trajs - xy, axis=2).min(1) < obj_r + radius + 0.3):
                continue
            if any(math.hypot(*(xy - q)) < radius + qr + 0.3 for q, qr in placed):
                continue
            yaw = eyaw[i] + rng.normal(0.0, 0.03)
            rows.append((kind, [xy[0], xy[1], size[2] / 2, *size, yaw, 0.0, 0.0]))
            placed.append((xy, radius))
            break
    names = [k for k, _ in rows]
    colour = np.array([SCENERY[k].colour for k in names], np.float64).reshape(-1, 3)
    colour = np.clip(colour * rng.uniform(0.85, 1.15, (len(names), 1)), 0, 255)
    return Scenery(np.array([b for _, b in rows], np.float64).reshape(-1, 9), names, colour,
                   np.clip(scenery_values(names, "reflectivity") + rng.normal(0.0, 5.0, len(names)), 3.0, 80.0),
                   scenery_values(names, "radar_p"), scenery_values(names, "radar_lambda"),
                   scenery_values(names, "rcs") + rng.normal(0.0, RCS_OBJECT_SIGMA, len(names)))


def make_faults(rng: np.random.Generator, n_samples: int, with_faults: bool) -> dict[int, dict]:
    """Fault events of one scene: key-frame index -> {"camera": {channel: "black"|"occluded"},
    "lidar": "silent" | ("beams", lost_rings), "radar": [channels]}. Events last 1-3 key frames."""
    faults: dict[int, dict] = {}
    if not with_faults:
        return faults
    n_events = 1 if n_samples < 8 or rng.random() < 0.6 else 2
    for _ in range(n_events):
        kind = SENSORS[int(rng.integers(3))]
        start = int(rng.integers(n_samples))
        frames = range(start, min(n_samples, start + int(rng.integers(1, 4))))
        if kind == "camera":
            mode = "black" if rng.random() < 0.5 else "occluded"
            n_cams = int(rng.integers(1, 7)) if mode == "black" else int(rng.integers(1, 4))
            detail = {CAMERAS[int(i)]: mode for i in rng.choice(6, size=n_cams, replace=False)}
        elif kind == "lidar":
            if rng.random() < 0.4:
                detail = "silent"
            else:
                n_lost = int(rng.integers(10, 25))
                first = int(rng.integers(0, 32 - n_lost + 1))
                detail = ("beams", tuple(range(first, first + n_lost)))
        else:
            n_radars = 5 if rng.random() < 0.4 else int(rng.integers(1, 5))
            detail = sorted(RADARS[int(i)] for i in rng.choice(5, size=n_radars, replace=False))
        for k in frames:
            entry = faults.setdefault(k, {})
            if kind == "camera":
                entry.setdefault("camera", {}).update(detail)
            elif kind == "radar":
                entry["radar"] = sorted(set(entry.get("radar", [])) | set(detail))
            else:
                entry["lidar"] = detail
    return faults


