"""Deterministic source trees to time copies on: ``finalcopy bench`` and ``benchmarks/``.

Every byte depends only on the shape asked for (size, number of small files,
or the benchmarks' workload name and scale) and the seed, so two machines, or
two runs months apart, time the same tree. File bodies are slices of one
seeded pseudo-random pool: incompressible, so no tool or file system wins by
compressing or deduplicating, and cheap to produce (a 1 GiB tree takes a few
seconds on tmpfs, dominated by memory bandwidth).

Shapes:

``projects`` (:func:`generate_sized` for ``finalcopy bench``)
    Shaped like the pipeline's work directory, since that is what finalcopy
    copies: ``projet_NNN/docs/`` folders with nine large videos
    (``.mp4 .mov .mkv``), multi-MiB tracking JSON, scenes CSVs, some audio
    JSON, and many small thumbnails and logs in subfolders. The videos get
    whatever the other files leave of the target size.
``small``
    10,000 files of 4 KiB in 200 folders (``scale`` changes the count): the
    per-file cost of each tool, where throughput says little.

The tree is written where the caller says; :func:`scratch_parent` picks a
place where reading it back is not what limits a copy (tmpfs when it has room).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from finalcopy.bench.machine import proc_field
from finalcopy.errors import Interrupted

__all__ = [
    "DEFAULT_SMALL_FILES",
    "WORKLOADS",
    "estimated_bytes",
    "generate",
    "generate_sized",
    "scratch_parent",
]

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

#: Large enough that files do not visibly repeat each other, small enough to
#: stay in cache while slicing.
POOL_SIZE = 16 * MiB
CHUNK = MiB
#: Fixed timestamp for every generated file and folder, so tools that compare
#: mtimes see the same tree everywhere.
FIXED_MTIME = 1_704_067_200  # 2024-01-01T00:00:00Z

PROJECT_VIDEOS = (2, 3, 2, 2)  # videos per project folder
THEMES = ("interview", "plateau", "reportage", "drone")
VIDEO_EXTS = (".mp4", ".mov", ".mkv")
# Sizes vary a little between videos (mean 1.0) so no two are alike.
VIDEO_SIZE_FACTORS = (1.06, 0.95, 1.03, 0.97, 1.08, 0.94, 1.01, 0.99, 0.97)
#: Thumbnails of the ``projects`` shape: 40 per video, 2–12 KiB each.
DEFAULT_SMALL_FILES = 40 * sum(PROJECT_VIDEOS)
LOGS_PER_PROJECT = 12
SMALL_FILES = 10_000
SMALL_FILE_SIZE = 4 * KiB
SMALL_PER_FOLDER = 50
SMALL_SUBFOLDERS = 10

# Magic numbers make the fake media look like media to tools that sniff types.
_MAGIC = {
    ".mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
    ".mov": b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ",
    ".mkv": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01",
    ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01",
}


class _Tree:
    """Writes files under one root from a shared random pool; stops when ``cancel`` is set."""

    def __init__(self, root: Path, seed: int, cancel: threading.Event | None = None) -> None:
        self.root = root
        self.seed = seed
        self.cancel = cancel
        pool_rng = random.Random(f"finalcopy-bench/pool/{seed}")
        # CHUNK extra bytes so a slice may start anywhere in the first POOL_SIZE.
        self._pool = memoryview(pool_rng.randbytes(POOL_SIZE + CHUNK))
        self.files = 0
        self.bytes = 0

    def rng(self, rel: str) -> random.Random:
        """A generator private to one path: output does not depend on write order."""
        return random.Random(f"finalcopy-bench/{self.seed}/{rel}")

    def binary(self, rel: str, size: int) -> None:
        """A file of ``size`` incompressible bytes with a header unique to it."""
        rng = self.rng(rel)
        magic = _MAGIC.get(os.path.splitext(rel)[1], b"")
        header = magic + f"finalcopy-bench {self.seed} {rel} {size}\n".encode()
        path = self._open_path(rel)
        with path.open("wb") as out:
            out.write(header[:size])
            remaining = size - min(size, len(header))
            while remaining:
                n = min(CHUNK, remaining)
                offset = rng.randrange(POOL_SIZE)
                out.write(self._pool[offset : offset + n])
                remaining -= n
        self._done(path, size)

    def text(self, rel: str, parts: Iterator[str]) -> None:
        """A text file written from ``parts`` as they are produced."""
        path = self._open_path(rel)
        size = 0
        with path.open("w", encoding="utf-8", newline="\n") as out:
            for part in parts:
                out.write(part)
                size += len(part)  # ASCII only, so characters are bytes
        self._done(path, size)

    def _open_path(self, rel: str) -> Path:
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted("interrupted while generating the workload")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _done(self, path: Path, size: int) -> None:
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
        self.files += 1
        self.bytes += size


def _json_array_document(
    head: str, items: Callable[[int], str], target: int, tail: str = "]}"
) -> Iterator[str]:
    """Stream ``head item,item,... tail`` until about ``target`` bytes.

    Items are joined in batches: one ``write`` per item would dominate the
    generation time of multi-MiB files.
    """
    yield head
    size = len(head) + len(tail)
    index = 0
    while size < target:
        batch: list[str] = []
        for _ in range(1000):
            item = items(index)
            batch.append(item)
            size += len(item) + 1
            index += 1
            if size >= target:
                break
        chunk = ",".join(batch)
        yield ("," + chunk) if index > len(batch) else chunk
    yield tail


def _tracking_json(tree: _Tree, rel: str, stem: str, target: int) -> None:
    rng = tree.rng(rel)
    labels = ("person", "face", "car", "logo", "text", "dog")
    # A pool of pre-rendered objects: formatting each one anew is the slow part.
    objects = [
        json.dumps(
            {
                "id": rng.randrange(64),
                "label": rng.choice(labels),
                "bbox": [
                    rng.randrange(1920),
                    rng.randrange(1080),
                    rng.randrange(16, 640),
                    rng.randrange(16, 480),
                ],
                "score": round(rng.random(), 4),
            },
            separators=(",", ":"),
        )
        for _ in range(4096)
    ]

    def frame(i: int) -> str:
        picked = ",".join(objects[rng.getrandbits(12)] for _ in range(1 + rng.getrandbits(2)))
        return f'{{"frame":{i},"t":{i / 25:.3f},"objects":[{picked}]}}'

    metadata = {
        "video": stem,
        "fps": 25,
        "width": 1920,
        "height": 1080,
        "tracker": "bench-tracker 1.0",
        "seed": tree.seed,
    }
    head = '{"metadata":' + json.dumps(metadata, separators=(",", ":")) + ',"frames":['
    tree.text(rel, _json_array_document(head, frame, target))


def _audio_json(tree: _Tree, rel: str, stem: str, target: int) -> None:
    rng = tree.rng(rel)

    def segment(i: int) -> str:
        start = i * 1.5
        speech = "true" if rng.getrandbits(1) else "false"
        return (
            f'{{"start":{start:.2f},"end":{start + 1.5:.2f},"speaker":"S{rng.randrange(4)}",'
            f'"rms":{rng.random():.4f},"speech":{speech}}}'
        )

    metadata = {"video": stem, "sample_rate": 48000, "channels": 2}
    head = '{"metadata":' + json.dumps(metadata, separators=(",", ":")) + ',"segments":['
    tree.text(rel, _json_array_document(head, segment, target))


def _scenes_csv(tree: _Tree, rel: str, rows: int) -> None:
    rng = tree.rng(rel)

    def lines() -> Iterator[str]:
        yield "scene,start_frame,end_frame,start_time,end_time,duration\n"
        frame = 0
        for scene in range(1, rows + 1):
            length = 25 + rng.randrange(500)
            end = frame + length
            yield (f"{scene},{frame},{end - 1},{frame / 25:.3f},{end / 25:.3f},{length / 25:.3f}\n")
            frame += length

    tree.text(rel, lines())


def _log(tree: _Tree, rel: str, lines_count: int) -> None:
    rng = tree.rng(rel)
    levels = ("INFO", "INFO", "INFO", "DEBUG", "WARNING")

    def lines() -> Iterator[str]:
        for i in range(lines_count):
            clock = f"{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
            yield (
                f"2024-01-01 {clock} - {rng.choice(levels)} - step {i}: "
                f"processed {rng.randrange(10_000)} frames in {rng.random() * 10:.2f} s\n"
            )

    tree.text(rel, lines())


def _videos() -> list[tuple[int, str, str]]:
    """(project, stem, extension) of every video, in a fixed order."""
    videos: list[tuple[int, str, str]] = []
    for p, count in enumerate(PROJECT_VIDEOS, start=1):
        for k in range(1, count + 1):
            n = len(videos)
            videos.append((p, f"{THEMES[n % len(THEMES)]}_{p:03d}_{k:02d}", VIDEO_EXTS[n % 3]))
    return videos


def _projects(tree: _Tree, target: int, small_files: int = DEFAULT_SMALL_FILES) -> None:
    """The ``projects`` shape at about ``target`` bytes, with ``small_files`` thumbnails."""
    scale = target / GiB
    tracking_size = max(256 * KiB, int(5 * MiB * scale))
    audio_size = max(64 * KiB, int(768 * KiB * scale))
    videos = _videos()
    # Budget: what the videos get is what the smaller files leave of the target.
    audio_count = (len(videos) + 1) // 2
    small_estimate = small_files * 7 * KiB
    small_estimate += len(PROJECT_VIDEOS) * LOGS_PER_PROJECT * 5 * KiB
    rest = target - len(videos) * tracking_size - audio_count * audio_size - small_estimate
    video_mean = max(64 * KiB, rest // len(videos))

    for n, (p, stem, ext) in enumerate(videos):
        docs = f"projet_{p:03d}/docs"
        factor = VIDEO_SIZE_FACTORS[n % len(VIDEO_SIZE_FACTORS)]
        tree.binary(f"{docs}/{stem}{ext}", int(video_mean * factor))
        _tracking_json(tree, f"{docs}/{stem}_tracking.json", stem, tracking_size)
        # The pipeline accepts both names for the scenes file.
        csv_name = f"{stem}_scenes.csv" if n % 2 == 0 else f"{stem}.csv"
        _scenes_csv(tree, f"{docs}/{csv_name}", 300 + 40 * n)
        if n % 2 == 0:
            _audio_json(tree, f"{docs}/{stem}_audio.json", stem, audio_size)
        rng = tree.rng(f"{docs}/thumbnails/{stem}")
        # The thumbnails spread evenly over the videos, the first ones taking the remainder.
        share = small_files // len(videos) + (n < small_files % len(videos))
        for t in range(1, share + 1):
            size = 2 * KiB + rng.randrange(10 * KiB)
            tree.binary(f"{docs}/thumbnails/{stem}/thumb_{t:04d}.jpg", size)
    for p in range(1, len(PROJECT_VIDEOS) + 1):
        for i in range(1, LOGS_PER_PROJECT + 1):
            _log(tree, f"projet_{p:03d}/logs/analysis_{i:02d}.log", 40 + 7 * i)


def _small(tree: _Tree, scale: float) -> None:
    count = max(1, round(SMALL_FILES * scale))
    for i in range(count):
        folder = i // SMALL_PER_FOLDER
        top, sub = divmod(folder, SMALL_SUBFOLDERS)
        tree.binary(f"d{top:03d}/s{sub:02d}/f{i:05d}.bin", SMALL_FILE_SIZE)


#: The benchmarks' named workloads: ``projects`` is about 1 GiB × scale.
WORKLOADS: dict[str, Callable[[_Tree, float], None]] = {
    "projects": lambda tree, scale: _projects(tree, int(GiB * scale)),
    "small": _small,
}


def _fresh_root(root: Path) -> None:
    """Refuse a non-empty target, so an earlier, different tree never mixes in."""
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)


def _seal(root: Path) -> None:
    """Fixed folder times, children first: creating entries in a folder changes its mtime."""
    for folder, _dirs, _files in os.walk(root, topdown=False):
        os.utime(folder, (FIXED_MTIME, FIXED_MTIME))


def generate(name: str, dest_dir: Path, scale: float = 1.0, seed: int = 0) -> Path:
    """Build the benchmarks' workload ``name`` in ``dest_dir/name`` and return that folder."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive number, not {scale}")
    root = Path(dest_dir) / name
    _fresh_root(root)
    WORKLOADS[name](_Tree(root, seed), scale)
    _seal(root)
    return root


def generate_sized(
    root: Path,
    size: int,
    small_files: int = DEFAULT_SMALL_FILES,
    *,
    seed: int = 0,
    cancel: threading.Event | None = None,
) -> tuple[int, int]:
    """The ``projects`` shape in ``root``, about ``size`` bytes; returns (files, bytes).

    At least about 3 MiB whatever ``size`` (the JSON and the logs keep a
    floor). ``cancel`` stops it between files with
    :class:`~finalcopy.errors.Interrupted`.
    """
    _fresh_root(root)
    tree = _Tree(root, seed, cancel)
    _projects(tree, size, small_files)
    _seal(root)
    return tree.files, tree.bytes


def estimated_bytes(size: int, small_files: int = DEFAULT_SMALL_FILES) -> int:
    """An upper bound of what :func:`generate_sized` writes, before writing it (space checks)."""
    videos = len(_videos())
    floor = videos * (256 * KiB + 64 * KiB + 32 * KiB) + (videos + 1) // 2 * 64 * KiB
    logs = len(PROJECT_VIDEOS) * LOGS_PER_PROJECT * 8 * KiB
    return max(size, floor) + small_files * 12 * KiB + logs + MiB


def scratch_parent(needed: int) -> tuple[Path, str]:
    """Where to generate a workload of ``needed`` bytes, and why there.

    ``/dev/shm`` (memory) when it has room and the machine has the memory
    to spare, so reading the source is never what limits a copy; else the
    system's temporary folder.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        spare = needed + needed // 4 + 256 * MiB
        if shutil.disk_usage(shm).free > spare and _available_memory() > spare:
            return shm, "/dev/shm (memory: the source is never the bottleneck)"
    where = Path(tempfile.gettempdir())
    return where, f"{where} (the system temporary folder: /dev/shm has no room)"


def _available_memory() -> int:
    """MemAvailable from /proc/meminfo, in bytes (0 when unknown)."""
    value = (proc_field("/proc/meminfo", "MemAvailable") or "0 kB").split()[0]
    return int(value) * KiB if value.isdigit() else 0
