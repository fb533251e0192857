"""Synthetic world generator: writes a complete dataset in the exact nuScenes on-disk format.

The unmodified nuscenes-devkit loads, reads and evaluates what this writes, so everything downstream reads it through
the same code path as real nuScenes. One scene is one log: an ego car drives (straight or gently curving) among
constant-velocity objects of the ten detection classes and unannotated roadside scenery (hedges, bins, posts, lamp
poles, low walls, sized like the classes a sparse LiDAR mistakes them for: see SCENERY), sensed by

  * LIDAR_TOP: 32 beams (HDL-32E elevations), a vectorised ray cast against the ground plane and the object boxes
    (slab test, first hit wins, so objects occlude), intensity from the body's paint (retroreflective cones and
    barriers bright) and range, returns that fade out sooner from dark bodies (return_probability), ring index,
    `.pcd.bin`;
  * five radars: Doppler returns mostly from vehicles (rcs by size, fluctuating per object and per return),
    weak/rare for small classes, range up to 100 m,
    raw radial velocity (vx, vy) and its ego-motion compensated version (vx_comp, vy_comp), clutter, 18-field `.pcd`;
  * six cameras with nuScenes mounting and scaled intrinsics, rendered with PIL (painter's algorithm), class-specific
    colours and patterns, sky/road background with a horizon, `.jpg`.

Conditions per scene (lighting day/dusk/night, weather clear/rain/fog, traffic light/medium/dense) change the
sensors: night/dusk darken and add noise to cameras (beyond ~12 m an object shows only by its lights, which parked
vehicles have off), rain/fog shorten the LiDAR and add near spurious returns, fog washes out cameras; radar is nearly
unaffected. Short sensor-fault events (camera black/occluded, LiDAR beams lost or silent, radar dropout) are written
to `<version>/synthetic_faults.json` = {sample_token: [sensor, ...]}.

Everything is derived from (seed, scene index): tokens are hashes of the seed and a key, each scene has its own RNG
streams, so the output is byte-identical for the same seed and code whatever the number of worker processes.

The package, in the order a world is made:

  config.py     WorldConfig, PRESETS, scene conditions; plan_world (names, conditions, split, fault scenes)
  world.py      class looks (SPECS), ego motion, objects, roadside scenery (SCENERY), fault events of one scene
  lidar.py      LiDAR ray cast and sweep simulation, .pcd.bin
  radar.py      radar returns, .pcd
  camera.py     camera model and rendering
  tables.py     nuScenes table rows and tokens, static tables, the map
  scene.py      one scene: its world, every sensor over its timeline, its files and table rows
  generator.py  generate: every scene (in worker processes), the tables, splits.json, synthetic_faults.json, summary
  cli.py        the command line (python -m datasets.synthetic runs it through __main__.py)

It needs numpy, PIL, the standard library and the torch-free sensors.names / sensors.geometry; never torch.

CLI: python -m datasets.synthetic --out DIR [--preset tiny|demo|full|nuscenes] [--scenes N] [--samples-per-scene M] [--seed S]
     [--workers W]
"""
from __future__ import annotations

from datasets.synthetic.camera import (
    CAMERA_MOUNTS, Camera, CameraScene, class_patterns, make_camera, render_camera,
)
from datasets.synthetic.cli import format_summary, main
from datasets.synthetic.config import (
    CONDITION_CYCLE, KEYFRAME_DT, PRESETS, TRAFFIC_LEVELS, ScenePlan, WorldConfig, plan_world,
)
from datasets.synthetic.generator import generate
from datasets.synthetic.lidar import (
    LIDAR_ELEVATIONS, LIDAR_MOUNT, LidarTargets, lidar_directions, ray_cast, return_probability, simulate_lidar,
    write_lidar_bin,
)
from datasets.synthetic.radar import RADAR_DTYPE, RADAR_MOUNTS, RadarTargets, simulate_radar, write_radar_pcd
from datasets.synthetic.scene import generate_scene
from datasets.synthetic.tables import TABLES, static_token, token
from datasets.synthetic.world import (
    SCENERY, SPECS, ClassSpec, EgoMotion, Objects, Scenery, boxes_in_frame, make_ego, make_faults, make_objects,
    make_scenery, material_reflectivity,
)

__all__ = [
    "CAMERA_MOUNTS", "CONDITION_CYCLE", "KEYFRAME_DT", "LIDAR_ELEVATIONS", "LIDAR_MOUNT", "PRESETS",
    "RADAR_DTYPE", "RADAR_MOUNTS", "SCENERY", "SPECS", "TABLES", "TRAFFIC_LEVELS", "Camera",
    "CameraScene", "ClassSpec", "EgoMotion", "LidarTargets", "Objects", "RadarTargets", "ScenePlan", "Scenery",
    "WorldConfig", "boxes_in_frame", "class_patterns", "format_summary", "generate", "generate_scene",
    "lidar_directions", "main", "make_camera", "make_ego", "make_faults", "make_objects", "make_scenery",
    "material_reflectivity", "plan_world", "ray_cast", "render_camera", "return_probability", "simulate_lidar",
    "simulate_radar", "static_token", "token", "write_lidar_bin", "write_radar_pcd",
]
