"""``finalcopy demo`` then ``finalcopy run`` from inside the sample, with no configuration."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import run_cli
from tests.support.pipeline import read_log, validate_step7_output


def test_demo_then_run_lands_in_the_fallback(tmp_path: Path) -> None:
    made = run_cli("demo", tmp_path / "demo", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    work = tmp_path / "demo" / "projets_extraits"
    assert sorted(p.name for p in work.iterdir()) == [
        "projet_camille_001",
        "projet_camille_002",
        "projet_camille_003_en_attente",
        "projet_camille_004_corrompu",
    ]
    again = run_cli("demo", tmp_path / "demo", cwd=tmp_path)
    assert again.returncode == 2, "an existing sample is never overwritten"
    # /mnt/cache must not exist for "no configuration" to mean the fallback.
    proc = run_cli("run", cwd=work, CACHE_ROOT_DIR=str(tmp_path / "mnt" / "cache"))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the corrupt project, by design
    out = tmp_path / "demo" / "_finalized_output"
    assert sorted(p.name for p in out.iterdir()) == ["projet_camille_001", "projet_camille_002"]
    assert sorted(p.name for p in work.iterdir()) == [
        "projet_camille_003_en_attente",
        "projet_camille_004_corrompu",
    ]
    log = read_log(tmp_path / "demo" / "logs" / "step7")
    assert "CRITICAL" not in log
    assert "Résumé: 2/3 projet(s) finalisé(s) et déplacé(s) avec succès." in log
    assert f"destination: {out}" in proc.stdout
    assert (tmp_path / "demo" / "archives" / "projet_camille_001" / "docs").is_dir()
    # The seed's validation script only knows .mp4/.mov with a .csv beside them.
    only_001 = tmp_path / "check"
    only_001.mkdir()
    (only_001 / "projet_camille_001").symlink_to(out / "projet_camille_001")
    assert validate_step7_output(only_001)


def test_demo_run_option_is_one_command(tmp_path: Path) -> None:
    proc = run_cli(
        "demo", tmp_path / "d", "--run", cwd=tmp_path, CACHE_ROOT_DIR=str(tmp_path / "none")
    )
    assert proc.returncode == 1, proc.stderr
    assert "exit 1 is expected here" in proc.stdout
    assert (tmp_path / "d" / "_finalized_output" / "projet_camille_002").is_dir()
