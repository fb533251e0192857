"""Pictures made by the devkit's own render functions, proving that the synthetic world's geometry lines up:
LiDAR points projected into a camera image, and the annotated boxes drawn in the same camera.

    python bench/render_geometry.py --dataroot data/synth-demo [--version v1.0-synth] [--out docs] [--sample 5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_data_flags  # noqa: E402

matplotlib.use("Agg")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_flags(p, split=None)
    p.add_argument("--out", default="docs")
    p.add_argument("--sample", type=int, default=5, help="index of the sample in the sample table")
    p.add_argument("--camera", default="CAM_FRONT")
    return p.parse_args(argv)


def main(argv=None) -> list[Path]:
    args = parse_args(argv)

    import matplotlib.pyplot as plt
    from nuscenes import NuScenes

    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    sample = nusc.sample[args.sample]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "devkit_lidar_in_camera.png", out / "devkit_boxes_in_camera.png"]
    nusc.render_pointcloud_in_image(sample["token"], pointsensor_channel="LIDAR_TOP", camera_channel=args.camera,
                                    dot_size=3, out_path=str(paths[0]), verbose=False)
    nusc.render_sample_data(sample["data"][args.camera], out_path=str(paths[1]), verbose=False)
    plt.close("all")
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
