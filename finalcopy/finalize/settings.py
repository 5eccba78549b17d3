"""Settings of ``finalcopy run``: explicit options first, then environment variables, then defaults.

The environment variable names are the pipeline's own (``CACHE_ROOT_DIR``,
``OUTPUT_DIR``, ``FINALIZE_MODE``...), so the step keeps working when the
workflow service starts it the way it started the original script.

Folders, all absolute once resolved:

* the **work directory** (``projets_extraits/``) holds one folder per project;
  it is the command's argument, or the current directory;
* the **base directory** is the pipeline's repository root, the parent of the
  work directory (``FINALCOPY_BASE_DIR`` / ``--base-dir`` overrides it). It
  holds the last-resort destination ``_finalized_output/``, the default log
  directory ``logs/step7/`` and the default archive directory ``archives/``.

``--bwlimit`` (``FINALCOPY_BWLIMIT``) becomes one limiter here, in
``copy.bwlimit``: every copy of the run (projects, archives, restores) is
given these copy options, so they all draw from that one bucket.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args

from finalcopy.backends.registry import DestinationOptions, SshLocation, parse_destination
from finalcopy.choices import Mode, OnExisting
from finalcopy.engine import CopyOptions
from finalcopy.engine.bandwidth import BandwidthLimiter, limiter_for
from finalcopy.errors import UsageError

MODES: tuple[Mode, ...] = get_args(Mode)
ON_EXISTING: tuple[OnExisting, ...] = get_args(OnExisting)
DEFAULT_CACHE_ROOT_DIR = "/mnt/cache"
FALLBACK_DIR_NAME = "_finalized_output"
STATUS_FILE_NAME = "step7_status.json"

#: Environment variable read for each setting (documented in ``docs/run.md``).
ENV = {
    "output_dir": "OUTPUT_DIR",
    "cache_root_dir": "CACHE_ROOT_DIR",
    "fallback_output_dir": "FALLBACK_OUTPUT_DIR",
    "archives_dir": "ARCHIVES_DIR",
    "mode": "FINALIZE_MODE",
    "restore_archives": "RESTORE_ARCHIVES_TO_OUTPUT",
    "log_dir": "LOG_DIR",
    "debug": "DEBUG",
    "base_dir": "FINALCOPY_BASE_DIR",
    "on_existing": "FINALCOPY_ON_EXISTING",
    "no_fallback": "FINALIZE_NO_FALLBACK",
    "bwlimit": "FINALCOPY_BWLIMIT",
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def parse_flag(value: str, name: str) -> bool:
    """``1``/``true``/``True``/``yes``/``on`` → True; ``0``/``false``/``no``/``off``/empty → False.

    Anything else is refused: a typo must not silently mean "off".
    """
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"{name}={value!r} is not a boolean (use 1/true or 0/false)")


@dataclass(frozen=True)
class Settings:
    """Everything one run needs; build it with :meth:`resolve` (or fill it by hand in tests)."""

    work_dir: Path
    base_dir: Path
    output: str
    """Destination string: a local path, ``sftp://...`` or ``user@host:path``."""
    fallback_output: Path | None
    archives_dir: Path
    log_dir: Path
    mode: Mode = "lenient"
    restore_archives: bool = False
    debug: bool = False
    on_existing: OnExisting = "merge"
    no_fallback: bool = False
    """Only the output may be used: an unusable output is exit 3, not a fallback."""
    dry_run: bool = False
    verbose: bool = False
    report_path: Path | None = None
    copy: CopyOptions = field(default_factory=CopyOptions)
    destination: DestinationOptions = field(default_factory=DestinationOptions)

    @property
    def status_file(self) -> Path:
        """Where the workflow service polls progress (see ``docs/run.md``)."""
        return self.log_dir / STATUS_FILE_NAME

    @property
    def last_resort_output(self) -> Path:
        return self.base_dir / FALLBACK_DIR_NAME

    @property
    def meta_dir(self) -> Path:
        """finalcopy's own files in the work directory: per-project locks and journals."""
        return self.work_dir / ".finalcopy"

    def local_output(self) -> Path | None:
        """The output as a local path, or None when it is remote."""
        location = parse_destination(self.output)
        return None if isinstance(location, SshLocation) else _absolute(location)

    @classmethod
    def resolve(
        cls,
        options: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
    ) -> Settings:
        """Build settings from explicit ``options``, then ``env``, then defaults.

        ``options`` keys are the field names plus ``cache_root_dir``,
        ``output_dir``, ``fallback_output_dir`` and ``bwlimit`` (a rate or
        timetable as ``--bwlimit`` takes it, or a :class:`BandwidthLimiter` to
        share; it replaces ``copy.bwlimit``); only values the user gave
        explicitly belong there (the CLI passes command-line values, not
        environment ones, so that one rule decides precedence). The output is
        the first of: ``output_dir`` option, ``cache_root_dir`` option,
        ``OUTPUT_DIR``, ``CACHE_ROOT_DIR``, ``/mnt/cache``.
        """
        valid = {f.name for f in fields(cls)} - {"output", "fallback_output"}
        valid |= {"output_dir", "cache_root_dir", "fallback_output_dir", "bwlimit"}
        unknown = sorted(set(options or {}) - valid)
        if unknown:
            raise UsageError(
                f"unknown setting(s) {', '.join(repr(k) for k in unknown)}; "
                f"valid settings: {', '.join(sorted(valid))}"
            )
        opts = {k: v for k, v in (options or {}).items() if v is not None}
        environ = os.environ if env is None else env

        def pick(key: str) -> Any:
            if key in opts:
                return opts[key]
            value = environ.get(ENV[key], "")
            return value if value.strip() else None

        work_dir = _absolute(Path(opts.get("work_dir") or cwd or Path.cwd()))
        if not work_dir.is_dir():
            raise UsageError(f"work directory '{work_dir}' does not exist or is not a folder")
        base = pick("base_dir")
        base_dir = _absolute(Path(base)) if base else work_dir.parent

        output = (
            opts.get("output_dir")
            or opts.get("cache_root_dir")
            or pick("output_dir")
            or pick("cache_root_dir")
            or DEFAULT_CACHE_ROOT_DIR
        )
        fallback = pick("fallback_output_dir")
        archives = pick("archives_dir")
        log_dir = pick("log_dir")

        mode = str(pick("mode") or "lenient").strip().lower()
        if mode not in MODES:
            raise UsageError(f"FINALIZE_MODE must be one of {', '.join(MODES)}, not '{mode}'")
        on_existing = str(pick("on_existing") or "merge").strip().lower()
        if on_existing not in ON_EXISTING:
            raise UsageError(
                f"--on-existing must be one of {', '.join(ON_EXISTING)}, not '{on_existing}'"
            )

        def flag(key: str) -> bool:
            value = pick(key)
            if value is None:
                return False
            if isinstance(value, bool):
                return value
            return parse_flag(str(value), ENV[key])

        known = {f.name for f in fields(cls)}
        rest = {k: v for k, v in opts.items() if k in known and k not in _RESOLVED}
        limit = pick("bwlimit")
        if limit is not None:
            copy = opts.get("copy", CopyOptions())
            rest["copy"] = replace(copy, bwlimit=_limiter(limit, "bwlimit" in opts))
        settings = cls(
            work_dir=work_dir,
            base_dir=base_dir,
            output=str(output),
            fallback_output=_absolute(Path(fallback)) if fallback else None,
            archives_dir=_absolute(Path(archives)) if archives else base_dir / "archives",
            log_dir=_absolute(Path(log_dir)) if log_dir else base_dir / "logs" / "step7",
            mode=mode,
            on_existing=on_existing,
            restore_archives=flag("restore_archives"),
            debug=flag("debug"),
            no_fallback=flag("no_fallback"),
            **rest,
        )
        settings.copy.validate()
        return settings

    def with_changes(self, **changes: Any) -> Settings:
        return replace(self, **changes)


_RESOLVED = {
    "work_dir",
    "base_dir",
    "fallback_output",
    "archives_dir",
    "log_dir",
    "mode",
    "on_existing",
    "restore_archives",
    "debug",
    "no_fallback",
}


def _limiter(value: object, given: bool) -> BandwidthLimiter | None:
    """The one limiter of the run: the one given, or made from a rate or timetable."""
    if isinstance(value, BandwidthLimiter):
        return value
    return limiter_for(str(value), "--bwlimit" if given else ENV["bwlimit"])


def _absolute(path: Path) -> Path:
    """Absolute and normalised, without resolving symlinks (messages show what the user gave)."""
    return Path(os.path.abspath(path.expanduser()))
