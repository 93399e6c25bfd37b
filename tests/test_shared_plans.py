"""Re-planning a source dataset without --plans-from would replace the plans it shares with its target: refused in one
line through covtransfer_plan_and_preprocess, nothing rewritten, unless --overwrite."""

from pathlib import Path

from covtransfer.cli import plan_and_preprocess
from covtransfer.cli.common import run_cli
from covtransfer.plans import Plans
from tiny_data import write_raw_dataset


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_replanning_a_source_on_its_own_is_refused_without_overwrite(tmp_path, capsys):
    for dataset_id in (1, 2):
        write_raw_dataset(tmp_path / "raw", dataset_id, f"Blob{dataset_id}", 2, shape=(8, 16, 16))
    flags = ["--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pre"), "--plan-only", "-np", "1",
             "--fingerprint-voxels", "1000", "--preset", "cpu"]
    assert run_cli(plan_and_preprocess.main, ["-d", "1", "2", "--plans-from", "1", *flags]) == 0
    source = tmp_path / "pre" / "Dataset002_Blob2"
    assert Plans.load(source / "plans.json").plans_from == "Dataset001_Blob1"
    before = _contents(tmp_path / "pre")
    capsys.readouterr()

    for argv in (["-d", "2"], ["-d", "2", "1", "--plans-from", "2"]):  # on its own, or as a target itself
        assert run_cli(plan_and_preprocess.main, [*argv, *flags]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {source / 'plans.json'}: these plans came from "
                                                      "Dataset001_Blob1 (--plans-from)"), lines
        assert "--plans-from Dataset001_Blob1 to keep them, or --overwrite" in lines[0]
        assert _contents(tmp_path / "pre") == before

    # with the target's plans again it goes on; with --overwrite it plans the source on its own
    assert run_cli(plan_and_preprocess.main, ["-d", "2", "--plans-from", "1", *flags]) == 0
    assert run_cli(plan_and_preprocess.main, ["-d", "2", "--overwrite", *flags]) == 0
    assert Plans.load(source / "plans.json").plans_from is None
