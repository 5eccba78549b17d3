"""The operator's log file: ``LOG_DIR/finalize_YYYYmmdd_HHMMSS.log``.

Lines read ``YYYY-mm-dd HH:MM:SS - LEVEL - message``. Operators grep the
French messages below, so they are kept verbatim from the original step;
everything else finalcopy logs is in English.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from pathlib import Path

LOGGER_NAME = "finalcopy.finalize.run"
FORMAT = "%(asctime)s - %(levelname)s - %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

# The verbatim French lines (DESIGN §4.6 and the original's log excerpt).
START = "--- Démarrage du script de Finalisation et Nettoyage ---"
DESTINATION = "Le répertoire de destination est: {dest}"
SEARCHING = "Recherche de projets à finaliser dans: {work}"
READY = "Projet '{p}' est prêt (basé sur '{video}')."
COUNT = "{n} projet(s) à finaliser"
NOTHING = "Aucun projet à finaliser. Fin du script."
PROJECT = "Finalisation du projet: {p}"
COPIED = "Projet '{p}' copié avec succès vers '{dest}'"
SOURCE_DELETED = "Dossier source '{src}' supprimé avec succès."
PROJECT_DONE = "Finalisation terminée pour '{p}'"
ERROR = "Erreur lors de la finalisation du projet '{p}': {reason}"
END = "--- Finalisation terminée ---"
SUMMARY = "Résumé: {ok}/{n} projet(s) finalisé(s) et déplacé(s) avec succès."
# Console lines of the original (printed, not logged).
CONSOLE_IN_PROGRESS = "Finalisation en cours pour '{p}'..."


def log_file_name(moment: datetime | None = None) -> str:
    return f"finalize_{(moment or datetime.now()).strftime('%Y%m%d_%H%M%S')}.log"


class FinalizationLog:
    """A logger writing the finalization's log file (with ``echo``, the same lines to stderr)."""

    def __init__(self, log_dir: Path | None, *, debug: bool, echo: bool) -> None:
        self.logger = logging.getLogger(f"{LOGGER_NAME}.{id(self)}")
        self.logger.setLevel(logging.DEBUG if debug else logging.INFO)
        self.logger.propagate = False
        self.path: Path | None = None
        self.error: str | None = None
        formatter = logging.Formatter(FORMAT, DATE_FORMAT)
        self._handlers: list[logging.Handler] = []
        if log_dir is not None:
            try:
                log_dir.mkdir(parents=True, exist_ok=True)
                path = _unique(log_dir / log_file_name())
                handler: logging.Handler = logging.FileHandler(path, encoding="utf-8", delay=False)
                self.path = path
                self._add(handler, formatter)
            except OSError as exc:
                self.error = f"cannot write the log in '{log_dir}': {exc.strerror or exc}"
        if echo or self.path is None:
            self._add(logging.StreamHandler(sys.stderr), formatter)

    def _add(self, handler: logging.Handler, formatter: logging.Formatter) -> None:
        handler.setFormatter(formatter)
        self.logger.addHandler(handler)
        self._handlers.append(handler)

    def close(self) -> None:
        for handler in self._handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self._handlers.clear()


def _unique(path: Path) -> Path:
    """Create the file; two runs started in the same second keep separate files."""
    candidate, n = path, 1
    while True:
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return candidate
        except FileExistsError:
            candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
            n += 1
