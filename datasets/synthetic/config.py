"""World configuration and plan: the WorldConfig that defines a world (same config => byte-identical output), the
presets, the scene conditions, and plan_world, which decides every scene's name, conditions, split and fault events
before anything is simulated."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sensors.names import LIGHTINGS, WEATHERS

TRAFFIC_LEVELS = ("light", "medium", "dense")
# Latin-square order: any three consecutive entries cover every lighting and every weather (day clear, dusk rain,
# night fog, day rain, dusk fog, night clear, day fog, dusk clear, night rain).
CONDITION_CYCLE = tuple((LIGHTINGS[i % 3], WEATHERS[(i + i // 3) % 3]) for i in range(9))
MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100")
MINI_VAL = ("scene-0103", "scene-0916")
KEYFRAME_DT = 0.5
T0_US = 1_700_000_000_000_000


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a world; same config => byte-identical output.

    image_size: (W, H) of every camera image. lidar_sweeps / radar_sweeps: sweeps between two key frames.
    lidar_azimuth_steps: rays per beam and revolution (32 beams). fault_fraction: share of scenes with a
    sensor-fault event. lighting / weather / traffic: force one condition for every scene (None: stratified mix).
    objects_per_traffic: (lo, hi) extra objects per traffic level, on top of one object of each class.
    """

    scenes: int = 4
    samples_per_scene: int = 4
    seed: int = 0
    version: str = "v1.0-synth"
    image_size: tuple[int, int] = (400, 225)
    lidar_sweeps: int = 2
    radar_sweeps: int = 1
    scene_name_prefix: str = "synth-"
    lidar_azimuth_steps: int = 600
    lidar_max_range: float = 70.0
    jpeg_quality: int = 85
    val_fraction: float = 0.25
    fault_fraction: float = 0.35
    objects_per_traffic: tuple[tuple[int, int], ...] = ((6, 12), (14, 22), (26, 36))
    lighting: str | None = None
    weather: str | None = None
    traffic: str | None = None

    def validate(self) -> None:
        """Raise ValueError naming the bad value."""
        def bad(msg):
            raise ValueError(f"WorldConfig: {msg}")
        if not isinstance(self.scenes, int) or self.scenes < 1:
            bad(f"scenes must be an integer >= 1, got {self.scenes!r}")
        if not isinstance(self.samples_per_scene, int) or self.samples_per_scene < 2:
            bad(f"samples_per_scene must be an integer >= 2 (every instance is annotated twice), "
                f"got {self.samples_per_scene!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad(f"seed must be an integer >= 0, got {self.seed!r}")
        w, h = self.image_size
        if not (16 <= w <= 4000 and 16 <= h <= 4000):
            bad(f"image_size must be (W, H) with 16 <= W, H <= 4000, got {self.image_size!r}")
        if not (0 <= self.lidar_sweeps <= 20 and 0 <= self.radar_sweeps <= 20):
            bad(f"lidar_sweeps / radar_sweeps must be in 0..20, got {self.lidar_sweeps!r} / {self.radar_sweeps!r}")
        if not 16 <= self.lidar_azimuth_steps <= 4000:
            bad(f"lidar_azimuth_steps must be in 16..4000, got {self.lidar_azimuth_steps!r}")
        if not 0.0 <= self.val_fraction < 1.0 or not 0.0 <= self.fault_fraction <= 1.0:
            bad(f"val_fraction must be in [0, 1) and fault_fraction in [0, 1], got {self.val_fraction!r}, "
                f"{self.fault_fraction!r}")
        if not 1 <= self.jpeg_quality <= 100:
            bad(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        if not self.version or "/" in self.version:
            bad(f"version must be a folder name, got {self.version!r}")
        for name, value, allowed in (("lighting", self.lighting, LIGHTINGS), ("weather", self.weather, WEATHERS),
                                     ("traffic", self.traffic, TRAFFIC_LEVELS)):
            if value is not None and value not in allowed:
                bad(f"{name} must be one of {allowed} or None, got {value!r}")
        if self.version.endswith("mini"):
            if self.scenes > 10:
                bad(f"a '...mini' version uses the official mini scene names: at most 10 scenes, got {self.scenes}")


PRESETS: dict[str, WorldConfig] = {
    "tiny": WorldConfig(scenes=4, samples_per_scene=4, image_size=(200, 112), lidar_azimuth_steps=360,
                        objects_per_traffic=((2, 4), (4, 6), (6, 8)), fault_fraction=0.5),
    "demo": WorldConfig(scenes=56, samples_per_scene=14, image_size=(400, 225), lidar_azimuth_steps=640),
    "full": WorldConfig(scenes=150, samples_per_scene=20, image_size=(640, 360), lidar_azimuth_steps=900,
                        lidar_sweeps=4, radar_sweeps=2),
    # nuScenes-sized sensor data for bench/pipeline.py: 1600x900 images, 32 beams x 1085 rays (~35k points) per
    # LiDAR sweep, 9 sweeps between key frames (10 with the key frame's), two radar sweeps between key frames
    "nuscenes": WorldConfig(scenes=2, samples_per_scene=5, image_size=(1600, 900), lidar_azimuth_steps=1085,
                            lidar_sweeps=9, radar_sweeps=2, val_fraction=0.5, fault_fraction=0.0),
}


@dataclass(frozen=True)
class ScenePlan:
    """What the world decides about one scene before it is simulated."""

    index: int
    name: str
    lighting: str
    weather: str
    traffic: str
    split: str
    with_faults: bool


def plan_world(config: WorldConfig) -> list[ScenePlan]:
    """Conditions, names, split and fault scenes of every scene. Conditions follow CONDITION_CYCLE (shuffled);
    validation scenes are picked round-robin over the condition groups so that val covers every lighting and
    weather whenever it has at least three scenes."""
    config.validate()
    n = config.scenes
    rng = np.random.default_rng([config.seed, 1_000_003])
    order = rng.permutation(n)
    combos = [CONDITION_CYCLE[int(order[i]) % len(CONDITION_CYCLE)] for i in range(n)]
    traffic = [TRAFFIC_LEVELS[int(i)] for i in rng.choice(3, size=n, p=[0.3, 0.4, 0.3])]
    n_val = 0 if n == 1 else max(1, int(round(config.val_fraction * n)))
    groups = {c: [i for i in range(n) if combos[i] == c] for c in CONDITION_CYCLE}
    val: list[int] = []
    for r in range(n):
        for c in CONDITION_CYCLE:
            if len(val) < n_val and r < len(groups[c]):
                val.append(groups[c][r])
    n_fault = int(round(config.fault_fraction * n))
    fault_scenes = set(int(i) for i in rng.choice(n, size=n_fault, replace=False))
    if config.version.endswith("mini"):
        if n_val > len(MINI_VAL) or n - n_val > len(MINI_TRAIN):
            raise ValueError(f"WorldConfig: version {config.version!r} names scenes like the official mini split "
                             f"(8 train, 2 val) but the split has {n - n_val} train and {n_val} val scenes")
        train_names, val_names = iter(MINI_TRAIN), iter(MINI_VAL)
        names = [next(val_names) if i in val else next(train_names) for i in range(n)]
    else:
        names = [f"{config.scene_name_prefix}{i:04d}" for i in range(n)]
    return [
        ScenePlan(index=i, name=names[i], lighting=config.lighting or combos[i][0],
                  weather=config.weather or combos[i][1], traffic=config.traffic or traffic[i],
                  split="val" if i in val else "train", with_faults=i in fault_scenes)
        for i in range(n)
    ]

