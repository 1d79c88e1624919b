#!/usr/bin/env python3
"""The README's pictures of the look, from what `bench --look --classes --strips DIR` wrote.

usage: python scripts/look_pictures.py STRIPS_DIR [OUT_DIR=docs/look]
Each preset's strips (camera above dream, six consecutive frames per scene) are scaled to 240 px
a frame; the
class pictures become one grid (a row per class: render, then each live preset).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

FRAME_WIDTH = 240  # px a frame in the strips
STRIP_FRAMES = 6  # frames side by side in a strip (look_bench.STRIP_FRAMES)
CLASS_HEIGHT = 200  # px a picture in the class grid
CLASSES = ("volcano", "pizza", "spider-web", "jellyfish", "goldfish")
QUALITY = [cv2.IMWRITE_JPEG_QUALITY, 82]


def scale_to(image: np.ndarray, height: int) -> np.ndarray:
    w = round(image.shape[1] * height / image.shape[0])
    return cv2.resize(image, (w, height), interpolation=cv2.INTER_AREA)


def main(src: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for strip in sorted(src.glob("*-people.jpg")):
        image = cv2.imread(str(strip))
        height = round(image.shape[0] * FRAME_WIDTH * STRIP_FRAMES / image.shape[1])
        cv2.imwrite(str(out / strip.name), scale_to(image, height), QUALITY)
        print("wrote", out / strip.name)
    rows = []
    for name in CLASSES:
        pictures = sorted(
            src.glob(f"class-{name}-*.jpg"), key=lambda p: "0" if "render" in p.name else p.name
        )
        if pictures:
            rows.append(
                np.concatenate([scale_to(cv2.imread(str(p)), CLASS_HEIGHT) for p in pictures], 1)
            )
    if rows:
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        cv2.imwrite(str(out / "classes.jpg"), np.concatenate(rows, 0), QUALITY)
        print("wrote", out / "classes.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "docs/look")))
