"""A sample ``projets_extraits/`` to try ``finalcopy run`` on, the same bytes on every machine.

It holds, as the pipeline would leave them:

* ``projet_camille_001``: two videos with scenes CSV, tracking JSON, one audio JSON;
* ``projet_camille_002``: three videos (``.mp4 .mkv .webm``) with ``_scenes.csv``
  names and tracking, in ``docs/`` and a ``docs/rushes/`` subfolder;
* ``projet_camille_003_en_attente``: videos only, not ready in ``lenient`` mode;
* ``projet_camille_004_corrompu``: a truncated tracking JSON, so its copy fails
  validation, is rolled back, and its source is kept.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from finalcopy.errors import UsageError

KiB = 1 << 10
WORK_DIR_NAME = "projets_extraits"
_MAGIC = {
    ".mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
    ".mkv": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01",
    ".webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
    ".mov": b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ",
}

# (project, relative video path, size in KiB, artifacts: scenes name or "", tracking, audio)
_VIDEOS: list[tuple[str, str, int, str, bool, bool]] = [
    ("projet_camille_001", "docs/video1.mp4", 1536, "video1.csv", True, True),
    ("projet_camille_001", "docs/video2.mov", 896, "video2.csv", True, False),
    ("projet_camille_002", "docs/interview.mp4", 2048, "interview_scenes.csv", True, False),
    ("projet_camille_002", "docs/drone.mkv", 768, "drone_scenes.csv", True, False),
    ("projet_camille_002", "docs/rushes/plateau.webm", 384, "plateau.csv", True, False),
    ("projet_camille_003_en_attente", "docs/brut1.mp4", 640, "", False, False),
    ("projet_camille_003_en_attente", "docs/brut2.mov", 320, "", False, False),
    ("projet_camille_004_corrompu", "docs/essai.mp4", 512, "essai.csv", True, False),
]
_CORRUPT = "projet_camille_004_corrompu/docs/essai_tracking.json"


def _video(rng: random.Random, suffix: str, size: int) -> bytes:
    head = _MAGIC.get(suffix, b"")
    return head + rng.randbytes(size - len(head))


def _scenes(rng: random.Random, frames: int) -> str:
    lines = ["No,Timecode In,Timecode Out,Frame In,Frame Out"]
    start, number = 0, 1
    while start < frames:
        end = min(frames, start + 25 + rng.randrange(200))
        lines.append(f"{number},{_tc(start)},{_tc(end)},{start},{end - 1}")
        start, number = end, number + 1
    return "\n".join(lines) + "\n"


def _tc(frame: int) -> str:
    seconds, rest = divmod(frame, 25)
    return f"00:{seconds // 60:02d}:{seconds % 60:02d}:{rest:02d}"


def _tracking(rng: random.Random, video: str, frames: int) -> str:
    data = {
        "metadata": {"video_path": video, "total_frames": frames, "fps": 25},
        "frames": [
            {
                "frame": i,
                "objects": [
                    {"id": rng.randrange(8), "bbox": [rng.randrange(1920), rng.randrange(1080)]}
                    for _ in range(rng.randrange(3))
                ],
            }
            for i in range(frames)
        ],
    }
    return json.dumps(data, separators=(",", ":")) + "\n"


def _audio(rng: random.Random, video: str) -> str:
    segments = [
        {"start": i * 1.5, "end": i * 1.5 + 1.5, "speech": rng.random() > 0.5} for i in range(40)
    ]
    return json.dumps({"metadata": {"video_path": video}, "segments": segments}) + "\n"


def generate_demo(root: Path) -> Path:
    """Write the sample work directory into ``root/projets_extraits`` and return it.

    Refuses a non-empty target, so nothing of the user's is ever mixed in or overwritten.
    """
    work = root / WORK_DIR_NAME
    if work.exists() and any(work.iterdir()):
        raise UsageError(f"'{work}' exists and is not empty; remove it or choose another folder")
    rng = random.Random("finalcopy-demo")
    for project, rel, size_kib, scenes, tracking, audio in _VIDEOS:
        video = work / project / rel
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(_video(rng, video.suffix, size_kib * KiB))
        frames = 250 + rng.randrange(500)
        if scenes:
            (video.parent / scenes).write_text(_scenes(rng, frames), encoding="utf-8")
        if tracking:
            (video.parent / f"{video.stem}_tracking.json").write_text(
                _tracking(rng, video.name, frames), encoding="utf-8"
            )
        if audio:
            (video.parent / f"{video.stem}_audio.json").write_text(
                _audio(rng, video.name), encoding="utf-8"
            )
        (work / project / "logs").mkdir(exist_ok=True)
        (work / project / "logs" / f"{video.stem}.log").write_text(
            f"2024-01-20 14:30:22 - INFO - analysed {video.name}: {frames} frames\n",
            encoding="utf-8",
        )
    corrupt = work / _CORRUPT
    text = corrupt.read_text(encoding="utf-8")
    corrupt.write_text(text[: len(text) // 2], encoding="utf-8")  # cut mid-document
    return work
