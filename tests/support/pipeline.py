"""The ``finalcopy run`` tests' material: ready projects, settings, logs, the seed's checks.

Includes the original specification's own material: its single-project test
tree and its post-finalization validation script, adapted to take the
output folder as an argument.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from finalcopy.engine import CopyOptions
from finalcopy.finalize import Settings

__all__ = [
    "SCENES",
    "SEED_FILES",
    "TRACKING",
    "project_files",
    "read_log",
    "settings_for",
    "validate_step7_output",
]

# The seed's "Test de Finalisation sur Projet Unique" (echo adds the newline).
SEED_FILES = {
    "docs/test.mp4": b"Test video content\n",
    "docs/test.csv": b"No,Timecode In,Timecode Out,Frame In,Frame Out\n",
    "docs/test_tracking.json": (
        b'{"metadata":{"video_path":"test.mp4","total_frames":100},"frames":[]}\n'
    ),
}

TRACKING = b'{"metadata":{"video_path":"v.mp4","total_frames":3},"frames":[{"frame":0}]}\n'
SCENES = b"No,Timecode In,Timecode Out,Frame In,Frame Out\n1,00:00:00:00,00:00:01:00,0,24\n"


def project_files(stem: str = "v", *, video_size: int = 4096, seed: int = 0) -> dict[str, bytes]:
    """A ready project: one video with scenes CSV and tracking JSON, plus a log."""
    video = hashlib.shake_256(f"{stem}-{seed}".encode()).digest(video_size)
    return {
        f"docs/{stem}.mp4": video,
        f"docs/{stem}.csv": SCENES,
        f"docs/{stem}_tracking.json": TRACKING,
        "logs/run.log": f"log of {stem}\n".encode(),
    }


def settings_for(tmp: Path, work: Path, **options: Any) -> Settings:
    """Settings with every folder in ``tmp`` and an empty environment."""
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    given: dict[str, Any] = {
        "work_dir": work,
        "output_dir": str(out),
        "archives_dir": tmp / "archives",
        "log_dir": tmp / "logs",
        "copy": CopyOptions(jobs=2),
    }
    given.update(options)
    return Settings.resolve(given, env={})


def read_log(log_dir: Path) -> str:
    """Every ``finalize_*.log`` in ``log_dir``, oldest first, as one text."""
    return "".join(p.read_text(encoding="utf-8") for p in sorted(log_dir.glob("finalize_*.log")))


def validate_step7_output(output_dir: Path) -> bool:
    """The seed's post-finalization validation script, with the output folder as argument."""
    if not output_dir.exists():
        print("❌ Répertoire de destination non trouvé")
        return False

    projects = [p for p in output_dir.iterdir() if p.is_dir()]
    if not projects:
        print("❌ Aucun projet finalisé trouvé")
        return False

    for project in projects:
        docs_dir = project / "docs"
        if not docs_dir.exists():
            print(f"❌ Dossier docs manquant pour {project.name}")
            return False

        video_files = list(docs_dir.glob("*.mp4")) + list(docs_dir.glob("*.mov"))
        if not video_files:
            print(f"❌ Aucun fichier vidéo dans {project.name}")
            return False

        for video_file in video_files:
            csv_file = video_file.with_suffix(".csv")
            tracking_file = video_file.with_name(f"{video_file.stem}_tracking.json")

            if not csv_file.exists():
                print(f"❌ Fichier CSV manquant: {csv_file}")
                return False

            if not tracking_file.exists():
                print(f"❌ Fichier tracking manquant: {tracking_file}")
                return False

            try:
                with open(tracking_file) as f:
                    json.load(f)
            except json.JSONDecodeError:
                print(f"❌ JSON invalide: {tracking_file}")
                return False

        print(f"✅ {project.name}: {len(video_files)} vidéos avec métadonnées complètes")

    print(f"✅ Validation réussie: {len(projects)} projets finalisés")
    return True
