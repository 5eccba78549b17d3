"""``finalcopy run`` end to end on real folders: what lands where, what is kept, what is logged."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from finalcopy.engine import Event
from finalcopy.finalize import finalize_sync
from finalcopy.finalize.report import SCHEMA
from tests.support.cli import cli_env, finalcopy_cmd, run_cli
from tests.support.pipeline import (
    SEED_FILES,
    TRACKING,
    project_files,
    read_log,
    settings_for,
    validate_step7_output,
)
from tests.support.trees import digests, snapshot
from tests.support.trees import make_tree as write_tree
from tests.support.users import LocalUser

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - (DEBUG|INFO|WARNING|ERROR|CRITICAL) - ")


def test_seed_single_project_example_and_its_validation_script(tmp_path: Path) -> None:
    work = tmp_path / "projets_extraits"
    write_tree(work / "test_finalization_complete", SEED_FILES)
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.exit_code == 0
    out = tmp_path / "out"
    assert digests(out / "test_finalization_complete") == digests(
        write_tree(tmp_path / "expected", SEED_FILES)
    )
    assert validate_step7_output(out)
    assert not (work / "test_finalization_complete").exists()
    # The archive holds the analysis artifacts, with a manifest b3sum can check.
    archived = tmp_path / "archives" / "test_finalization_complete"
    assert sorted(digests(archived)) == ["docs/test.csv", "docs/test_tracking.json"]
    assert (archived / ".finalcopy" / "manifest.blake3").is_file()


def test_log_lines_are_the_originals_verbatim(tmp_path: Path) -> None:
    work = tmp_path / "projets_extraits"
    write_tree(work / "projet_camille_001", project_files("video1"))
    write_tree(work / "projet_camille_002", project_files("video2"))
    write_tree(work / "pas_pret", {"docs/brut.mp4": b"x"})
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.exit_code == 0
    log = read_log(tmp_path / "logs")
    out = tmp_path / "out"
    expected = [
        "--- Démarrage du script de Finalisation et Nettoyage ---",
        f"Le répertoire de destination est: {out}",
        f"Recherche de projets à finaliser dans: {work}",
        "Projet 'projet_camille_001' est prêt (basé sur 'video1.mp4').",
        "Projet 'projet_camille_002' est prêt (basé sur 'video2.mp4').",
        "2 projet(s) à finaliser",
        "Finalisation du projet: projet_camille_001",
        f"Projet 'projet_camille_001' copié avec succès vers '{out / 'projet_camille_001'}'",
        f"Dossier source '{work / 'projet_camille_001'}' supprimé avec succès.",
        "Finalisation terminée pour 'projet_camille_001'",
        "--- Finalisation terminée ---",
        "Résumé: 2/2 projet(s) finalisé(s) et déplacé(s) avec succès.",
    ]
    messages = [LINE.sub("", line) for line in log.splitlines()]
    assert all(LINE.match(line) for line in log.splitlines())
    position = -1
    for message in expected:
        assert message in messages, message
        assert messages.index(message) > position, message
        position = messages.index(message)
    assert (work / "pas_pret").is_dir()
    assert report.not_ready == {"pas_pret": report.not_ready["pas_pret"]}


def test_nothing_to_do_logs_it_and_exits_0(tmp_path: Path) -> None:
    work = tmp_path / "projets_extraits"
    write_tree(work / "brut", {"docs/a.mov": b"x"})
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.exit_code == 0 and report.projects == []
    assert "Aucun projet à finaliser. Fin du script." in read_log(tmp_path / "logs")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("corrupt", b'{"metadata": {"video_path": "v.mp4"}, "frames": [}'),
        ("empty", b""),
        ("truncated", TRACKING[: len(TRACKING) // 2]),
        ("nan", b'{"score": NaN}'),
    ],
)
def test_bad_tracking_json_fails_the_project_and_keeps_the_source(
    tmp_path: Path, name: str, content: bytes
) -> None:
    work = tmp_path / "projets_extraits"
    files = project_files()
    files["docs/v_tracking.json"] = content
    write_tree(work / "bad", files)
    write_tree(work / "good", project_files("g"))
    before = digests(work / "bad")
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.exit_code == 1
    status = {p.name: p for p in report.projects}
    assert status["good"].status == "finalized"
    assert status["bad"].status == "failed"
    assert "invalid JSON" in status["bad"].reason
    assert digests(work / "bad") == before
    assert not (tmp_path / "out" / "bad").exists(), "the failed copy was rolled back"
    assert (tmp_path / "out" / "good").is_dir()
    log = read_log(tmp_path / "logs")
    assert "Erreur lors de la finalisation du projet 'bad'" in log
    assert "Résumé: 1/2 projet(s) finalisé(s) et déplacé(s) avec succès." in log


def test_large_tracking_json_streams_and_a_late_error_is_caught(tmp_path: Path) -> None:
    work = tmp_path / "projets_extraits"
    frames = ",".join(f'{{"frame":{i},"objects":[{{"id":{i % 7}}}]}}' for i in range(400_000))
    good = f'{{"metadata":{{}},"frames":[{frames}]}}'.encode()
    assert len(good) > 9 << 20
    files = project_files()
    files["docs/v_tracking.json"] = good[:-1]  # one byte short at the very end
    write_tree(work / "p", files)
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.projects[0].status == "failed"
    (work / "p" / "docs" / "v_tracking.json").write_bytes(good)
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.projects[0].status == "finalized"
    assert (tmp_path / "out" / "p" / "docs" / "v_tracking.json").read_bytes() == good


@pytest.mark.parametrize(
    ("mode", "files", "ready"),
    [
        ("strict", {"d/a.mp4": b"v", "d/a.csv": b"h\n"}, False),
        ("strict", {"d/a.mp4": b"v", "d/a.csv": b"h\n", "d/a_tracking.json": b"{}"}, True),
        ("lenient", {"d/a.MOV": b"v", "d/a_audio.json": b"[]"}, True),
        ("lenient", {"d/a.mkv": b"v"}, False),
        ("videos", {"d/a.webm": b"v"}, True),
    ],
)
def test_modes_decide_what_is_finalized(
    tmp_path: Path, mode: str, files: dict[str, bytes], ready: bool
) -> None:
    work = tmp_path / "w"
    write_tree(work / "p", files)
    report = finalize_sync(settings_for(tmp_path, work, mode=mode))
    assert report.exit_code == 0
    assert (tmp_path / "out" / "p").is_dir() is ready
    assert (work / "p").exists() is not ready


def test_archives_dir_inside_the_work_directory_survives(tmp_path: Path) -> None:
    work = tmp_path / "projets_extraits"
    archives = work / "archives"
    write_tree(archives / "older_project", {"docs/x_tracking.json": b"{}"})
    write_tree(work / "p", project_files())
    report = finalize_sync(settings_for(tmp_path, work, archives_dir=archives))
    assert report.exit_code == 0
    assert [p.name for p in report.projects] == ["p"], "the archive folder is not a project"
    assert (archives / "older_project" / "docs" / "x_tracking.json").read_bytes() == b"{}"
    assert (archives / "p" / "docs" / "v_tracking.json").read_bytes() == TRACKING
    assert not (work / "p").exists()


def test_archive_is_idempotent_and_never_overwritten(tmp_path: Path) -> None:
    work = tmp_path / "w"
    archives = tmp_path / "archives"
    write_tree(work / "p", project_files())
    finalize_sync(settings_for(tmp_path, work))
    first = snapshot(archives)
    # Same content again: nothing under ARCHIVES_DIR changes but the engine's bookkeeping.
    write_tree(work / "p", project_files())
    os.utime(work / "p" / "docs" / "v.csv", ns=(1, 1))
    finalize_sync(settings_for(tmp_path, work))

    def only_files(snap: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        return {k: v for k, v in snap.items() if ".finalcopy" not in k and "." in k[-6:]}

    assert only_files(snapshot(archives)) == only_files(first)
    # Different content: a dated sibling, the first archive untouched.
    files = project_files()
    files["docs/v_tracking.json"] = b'{"changed": true}'
    write_tree(work / "p", files)
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.exit_code == 0
    assert (archives / "p" / "docs" / "v_tracking.json").read_bytes() == TRACKING
    (sibling,) = [d for d in archives.iterdir() if d.name.startswith("p__archived_")]
    assert (sibling / "docs" / "v_tracking.json").read_bytes() == b'{"changed": true}'
    assert report.projects[0].warnings


def test_restore_archives_to_output(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_tree(tmp_path / "archives" / "p", {"docs/old_audio.json": b"[1]"})
    write_tree(work / "p", project_files())
    report = finalize_sync(settings_for(tmp_path, work, restore_archives=True))
    assert report.exit_code == 0
    out = tmp_path / "out" / "p"
    assert report.projects[0].restored == ["docs/old_audio.json"]
    assert (out / "docs" / "old_audio.json").read_bytes() == b"[1]"
    manifest = (out / ".finalcopy" / "manifest.blake3").read_text()
    assert "docs/old_audio.json" in manifest and "docs/v.mp4" in manifest


def _existing_copy(tmp_path: Path) -> Path:
    old = write_tree(tmp_path / "out" / "p", {"docs/v.mp4": b"old", "extra.txt": b"keep?"})
    return old


@pytest.mark.parametrize("policy", ["merge", "replace", "rename"])
def test_existing_destination_policies(tmp_path: Path, policy: str) -> None:
    work = tmp_path / "w"
    write_tree(work / "p", project_files())
    new = digests(work / "p")
    _existing_copy(tmp_path)
    report = finalize_sync(settings_for(tmp_path, work, on_existing=policy))
    assert report.exit_code == 0, report.to_dict()
    out = tmp_path / "out"
    if policy == "merge":
        assert digests(out / "p") == {**new, "extra.txt": digests(out / "p")["extra.txt"]}
    elif policy == "replace":
        assert digests(out / "p") == new
        # The previous copy is never deleted: it is kept aside, every byte of it.
        (aside,) = [d for d in out.iterdir() if d.name != "p"]
        assert re.fullmatch(r"p__replaced_\d{8}_\d{6}(_\d+)?", aside.name)
        assert (aside / "docs" / "v.mp4").read_bytes() == b"old"
        assert (aside / "extra.txt").read_bytes() == b"keep?"
    else:
        assert (out / "p" / "docs" / "v.mp4").read_bytes() == b"old"
        (renamed,) = [d for d in out.iterdir() if d.name.startswith("p__finalized_")]
        assert re.fullmatch(r"p__finalized_\d{8}_\d{6}(_\d+)?", renamed.name)
        assert digests(renamed) == new
    assert not (work / "p").exists()


def test_failed_merge_rolls_back_only_this_runs_writes(tmp_path: Path) -> None:
    work = tmp_path / "w"
    files = project_files()
    files["docs/new_file.bin"] = b"new"
    files["docs/v_tracking.json"] = b"{broken"
    write_tree(work / "p", files)
    old = _existing_copy(tmp_path)
    before = digests(old)
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.exit_code == 1
    after = digests(old)
    assert "docs/new_file.bin" not in after
    assert after["extra.txt"] == before["extra.txt"]
    assert digests(work / "p") == digests(write_tree(tmp_path / "exp", files))


def test_dry_run_touches_nothing(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_tree(work / "p", project_files())
    write_tree(work / "q", {"docs/only.mp4": b"v"})
    roots = [tmp_path]
    before = [snapshot(r) for r in roots]
    proc = run_cli(
        "run",
        work,
        "--dry-run",
        "--json",
        CACHE_ROOT_DIR=str(tmp_path / "missing"),
        ARCHIVES_DIR=str(tmp_path / "archives"),
    )
    assert proc.returncode == 0, proc.stderr
    assert [snapshot(r) for r in roots] == before
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["dry_run"] is True
    assert [(p["name"], p["status"]) for p in summary["projects"]] == [("p", "planned")]
    assert "q" in summary["not_ready"]
    assert summary["destination"] == str(tmp_path / "_finalized_output")


def test_report_and_status_file_schema(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_tree(work / "p", project_files())
    write_tree(work / "bad", {**project_files("b"), "docs/b_tracking.json": b"["})
    report_path = tmp_path / "report.json"
    proc = run_cli(
        "run",
        work,
        "--report",
        report_path,
        "--json",
        OUTPUT_DIR=str(tmp_path),
        ARCHIVES_DIR=str(tmp_path / "archives"),
        LOG_DIR=str(tmp_path / "logs"),
    )
    assert proc.returncode == 1, proc.stderr
    data = json.loads(report_path.read_text())
    assert data["schema"] == SCHEMA and data["kind"] == "finalize_report"
    assert data["state"] == "failed" and data["exit_code"] == 1
    assert data["totals"] == {
        "projects": 2,
        "finalized": 1,
        "failed": 1,
        "skipped": 0,
        "bytes": data["totals"]["bytes"],
        "bytes_copied": data["totals"]["bytes_copied"],
    }
    projects = {p["name"]: p for p in data["projects"]}
    assert set(projects["p"]) >= {
        "status",
        "bytes",
        "duration",
        "throughput_bytes_per_s",
        "destination",
        "reason",
        "source_deleted",
    }
    assert projects["p"]["destination"] == str(tmp_path / "p")
    assert "invalid JSON" in projects["bad"]["reason"]
    status = json.loads((tmp_path / "logs" / "step7_status.json").read_text())
    assert status["kind"] == "finalize_status" and status["state"] == "failed"
    assert status["projects"] == {"total": 2, "done": 1, "failed": 1, "skipped": 0}
    assert status["bytes"]["done"] == status["bytes"]["total"] > 0
    assert set(status) >= {"current_project", "started_at", "updated_at", "pid", "exit_code"}
    kinds = [json.loads(line)["kind"] for line in proc.stdout.splitlines()]
    assert {"run_planned", "project_started", "project_done", "project_failed"} <= set(kinds)
    assert kinds[-1] == "finalize_report"
    tagged = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(e.get("project") == "p" and e.get("phase") == "copy" for e in tagged)
    # A copy of the report sits beside the log file.
    (beside,) = (tmp_path / "logs").glob("finalize_*.json")
    assert json.loads(beside.read_text())["projects"] == data["projects"]


def test_cache_root_that_is_a_file_falls_back_to_finalized_output(tmp_path: Path) -> None:
    base = tmp_path / "repo"
    work = base / "projets_extraits"
    write_tree(work / "p", project_files())
    blocker = tmp_path / "cache"
    blocker.write_text("a file where a folder is expected")
    proc = run_cli("run", cwd=work, CACHE_ROOT_DIR=str(blocker))
    assert proc.returncode == 0, proc.stderr
    assert (base / "_finalized_output" / "p" / "docs" / "v.mp4").is_file()
    log = read_log(base / "logs" / "step7")
    assert f"Le répertoire de destination est: {base / '_finalized_output'}" in log
    assert "CRITICAL" not in log


def test_unwritable_output_then_fallback_output_dir(tmp_path: Path) -> None:
    """A read-only bind mount: the write probe fails as on a read-only cache disk."""
    cache = tmp_path / "cache"
    cache.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root for a read-only bind mount")
    bound = subprocess.run(["mount", "--bind", str(cache), str(cache)], check=False)
    if bound.returncode != 0:
        pytest.skip("mount --bind is not permitted here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(cache)], check=True)
        work = tmp_path / "repo" / "projets_extraits"
        write_tree(work / "p", project_files())
        fallback = tmp_path / "fallback"
        fallback.mkdir()
        proc = run_cli("run", work, CACHE_ROOT_DIR=str(cache), FALLBACK_OUTPUT_DIR=str(fallback))
        assert proc.returncode == 0, proc.stderr
        assert (fallback / "p" / "docs" / "v.mp4").is_file()
        assert list(cache.iterdir()) == []
        log = read_log(tmp_path / "repo" / "logs" / "step7")
        assert "not writable" in log and "Read-only file system" in log
    finally:
        subprocess.run(["umount", str(cache)], check=False)


def test_no_usable_destination_exits_3_and_touches_nothing(tmp_path: Path) -> None:
    base = tmp_path / "repo"
    work = base / "projets_extraits"
    write_tree(work / "p", project_files())
    (base / "_finalized_output").write_text("not a folder")
    before = snapshot(work)
    proc = run_cli(
        "run",
        work,
        CACHE_ROOT_DIR=str(tmp_path / "missing"),
        FALLBACK_OUTPUT_DIR=str(tmp_path / "missing2"),
    )
    assert proc.returncode == 3, proc.stderr
    assert snapshot(work) == before
    assert not (base / "archives").exists()
    log = read_log(base / "logs" / "step7")
    assert " - CRITICAL - No usable destination" in log


def test_workdir_argument_defaults_to_cwd_and_base_is_its_parent(tmp_path: Path) -> None:
    base = tmp_path / "repo"
    work = base / "projets_extraits"
    write_tree(work / "p", project_files())
    out = tmp_path / "cache"
    out.mkdir()
    proc = run_cli("run", cwd=work, CACHE_ROOT_DIR=str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / "p").is_dir()
    assert list((base / "logs" / "step7").glob("finalize_*.log"))
    assert (base / "archives" / "p" / "docs" / "v_tracking.json").is_file()
    assert "1 projet(s) à finaliser" in proc.stdout
    assert "Finalisation en cours pour 'p'..." in proc.stdout
    assert "Finalisation terminée pour 'p'" in proc.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run_cli("run", tmp_path / "nope").returncode == 2
    proc = run_cli("run", tmp_path, FINALIZE_MODE="sloppy")
    assert proc.returncode == 2 and "FINALIZE_MODE" in proc.stderr


def test_sources_never_deleted_through_a_symlinked_project(tmp_path: Path) -> None:
    outside = write_tree(tmp_path / "elsewhere" / "p", project_files())
    work = tmp_path / "w"
    work.mkdir()
    (work / "p").symlink_to(outside, target_is_directory=True)
    report = finalize_sync(settings_for(tmp_path, work))
    assert report.projects == [] and "p" in report.not_ready
    assert digests(outside) == digests(write_tree(tmp_path / "exp", project_files()))


def test_debug_env_gives_debug_lines(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_tree(work / "q", {"docs/only.mp4": b"v"})
    proc = run_cli("run", work, OUTPUT_DIR=str(tmp_path), LOG_DIR=str(tmp_path / "l"), DEBUG="true")
    assert proc.returncode == 0, proc.stderr
    assert " - DEBUG - Folder 'q' is not ready" in read_log(tmp_path / "l")


def test_remaining_work_dir_is_tidy(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_tree(work / "p", project_files())
    finalize_sync(settings_for(tmp_path, work))
    assert list(work.iterdir()) == []
    shutil.rmtree(work)


def test_read_only_cache_for_an_ordinary_user_falls_back(
    public_tmp_path: Path, unprivileged_user: LocalUser
) -> None:
    """The seed's own error test (``chmod 444 /mnt/cache``), run as a user chmod binds."""
    base = public_tmp_path / "repo"
    work = base / "projets_extraits"
    write_tree(work / "p", project_files())
    cache = public_tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    for folder, dirs, files in os.walk(base):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, unprivileged_user.uid, unprivileged_user.gid)
    proc = subprocess.run(
        [
            "setpriv",
            f"--reuid={unprivileged_user.uid}",
            f"--regid={unprivileged_user.gid}",
            "--clear-groups",
            *finalcopy_cmd("run"),
        ],
        cwd=work,
        env=cli_env(CACHE_ROOT_DIR=str(cache), HOME=str(unprivileged_user.home)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(cache.iterdir()) == []
    assert (base / "_finalized_output" / "p" / "docs" / "v.mp4").is_file()
    assert "Permission denied" in read_log(base / "logs" / "step7")


def test_a_failing_event_listener_does_not_break_the_run(tmp_path: Path) -> None:
    work = tmp_path / "w"
    write_tree(work / "p", project_files())
    seen: list[str] = []

    def listener(event: Event) -> None:
        seen.append(event.kind)
        raise BrokenPipeError("reader went away")

    report = finalize_sync(settings_for(tmp_path, work), events=listener)
    assert report.exit_code == 0 and len(seen) == 1
    assert "event listener failed" in read_log(tmp_path / "logs")
