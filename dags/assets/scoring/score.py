"""Score one slice of a clip's frames: Reinhard et al.'s colour transfer (2001) onto a style image.

Each frame's colours, in CIE L*a*b*, get the mean and spread of the style image's, channel by
channel; NumPy does the maths, Pillow reads and writes the PNGs. One line per frame goes to the
job's stdout and to this slice's file in the run's shared log folder (seed 003: every job logs
to one place). Run as a Batch AI job, one per slice:

    score.py --frames DIR --style FILE --start N --count N --output DIR --log-dir DIR
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

WHITE = np.array([0.95047, 1.0, 1.08883])  # D65
RGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ RGB_TO_XYZ.T / WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * WHITE
    linear = np.clip(xyz @ np.linalg.inv(RGB_TO_XYZ).T, 0, 1)
    return np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)


def load(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def transfer(frame: np.ndarray, style_mean: np.ndarray, style_std: np.ndarray) -> np.ndarray:
    lab = rgb_to_lab(frame)
    mean, std = lab.reshape(-1, 3).mean(axis=0), lab.reshape(-1, 3).std(axis=0) + 1e-6
    return lab_to_rgb((lab - mean) / std * style_std + style_mean)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    for name in ("--frames", "--style", "--output", "--log-dir"):
        parser.add_argument(name, required=True)
    parser.add_argument("--start", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    style = rgb_to_lab(load(args.style)).reshape(-1, 3)
    style_mean, style_std = style.mean(axis=0), style.std(axis=0)
    names = sorted(name for name in os.listdir(args.frames) if name.endswith(".png"))[args.start : args.start + args.count]
    os.makedirs(args.output, exist_ok=True)
    os.makedirs(args.log_dir, exist_ok=True)
    with open(os.path.join(args.log_dir, f"slice-{args.start:05d}.log"), "a") as log:
        for name in names:
            started = time.monotonic()
            styled = transfer(load(os.path.join(args.frames, name)), style_mean, style_std)
            Image.fromarray((styled * 255).round().astype(np.uint8)).save(os.path.join(args.output, name))
            line = f"scored {name} in {1000 * (time.monotonic() - started):.0f} ms"
            print(line, flush=True)
            log.write(line + "\n")
    return 0 if names else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
