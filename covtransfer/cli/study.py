"""``covtransfer_study``: the published transfer protocol — plan, pre-train, train every strategy on every fold,
predict each fold's test cases, evaluate and aggregate (resumable: finished steps are skipped). The steps are jobs
that run here one after another (``--launcher inline``), as parallel processes on this machine's GPUs (``local``) or
as SLURM jobs (``slurm``); ``--dry-run`` prints them."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import (add_device_argument, add_root_arguments, help_description, roots_from_args,
                                    run_cli)
from covtransfer.cli.study_launch import add_launcher_arguments, check_launcher_arguments, launch, run_job
from covtransfer.data.raw_guard import refuse_raw_dataset
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.experiments.report import summary_text
from covtransfer.experiments.spec import DEFAULT_STRATEGIES, StudySpec
from covtransfer.experiments.study import Study
from covtransfer.planning.fingerprint import FOREGROUND_VOXEL_BUDGET
from covtransfer.training.trainer import AMP_MODES, TrainingSettings


def _runs_one_job(argv: Sequence[str] | None) -> bool:
    """Whether ``--job`` is given: that job reads the datasets from the study folder, every other run needs them."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--job")
    return probe.parse_known_args(argv)[0].job is not None


def main(argv: Sequence[str] | None = None) -> int:
    defaults = TrainingSettings()
    needs_datasets = not _runs_one_job(argv)
    p = argparse.ArgumentParser(prog="covtransfer_study", description=help_description(__doc__))
    p.add_argument("--target", required=needs_datasets,
                   help="target dataset id or name (e.g. the converted COVID-19-CT-Seg); not needed with --job")
    p.add_argument("--sources", nargs="+", required=needs_datasets,
                   help="source (non-COVID lesion) dataset ids or names; not needed with --job")
    p.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                   help=f"comma-separated (default {','.join(DEFAULT_STRATEGIES)})")
    p.add_argument("--folds", nargs="+", default=["0", "1", "2", "3", "4"], help="folds (default 0 1 2 3 4), or all")
    p.add_argument("--pretrain", choices=("multi", "each", "both"), default="multi",
                   help="one multi-lesion model, one model per source, or both (default multi)")
    p.add_argument("--preset", help="planning preset for the target (e.g. cpu)")
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="planning memory budget (default 8)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help=f"target training epochs ({defaults.epochs})")
    p.add_argument("--pretrain-epochs", type=int, help="pre-training epochs (default: --epochs)")
    p.add_argument("--iters-per-epoch", type=int, default=defaults.iters_per_epoch)
    p.add_argument("--val-iters", type=int, default=defaults.val_iters)
    add_device_argument(p)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--amp", choices=AMP_MODES, default="auto",
                   help="mixed precision (auto: on GPUs only; on: also bf16 on the CPU; bf16 or fp16 name the format, fp16 "
                        "with loss scaling as nnU-Net, CUDA only)")
    p.add_argument("--tolerance-mm", type=float, default=3.0, help="NSD tolerance in mm (default 3)")
    p.add_argument("--no-tta", action="store_true", help="predict the test cases without mirroring")
    p.add_argument("-np", "--num-processes", type=int, metavar="N",
                   help="preprocessing worker processes (default: number of CPU cores)")
    p.add_argument("--fingerprint-voxels", type=int, default=FOREGROUND_VOXEL_BUDGET, metavar="N",
                   help="foreground intensity samples per channel for the fingerprints (default 1e8, as nnU-Net; "
                        "fewer use less memory and time)")
    p.add_argument("-o", "--output", help="study folder (default RESULTS/<target>/study)")
    add_launcher_arguments(p)
    add_root_arguments(p)
    args = p.parse_args(argv)
    if args.job:
        return run_job(args)
    if args.output:
        refuse_raw_dataset(args.output, "-o", roots_from_args(args).raw)
    launcher = check_launcher_arguments(args)
    device = args.device if launcher.deferred_device else resolve_device(args.device)
    if args.num_processes is not None and args.num_processes < 1:
        raise CovtransferError(f"--num-processes {args.num_processes}: must be at least 1")
    if args.fingerprint_voxels < 1:
        raise CovtransferError(f"--fingerprint-voxels {args.fingerprint_voxels}: must be at least 1")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    common = dict(iters_per_epoch=args.iters_per_epoch, val_iters=args.val_iters, device=str(device), seed=args.seed,
                  amp=args.amp, final_validation=False)
    settings = TrainingSettings(epochs=args.epochs, **common)
    pretrain_settings = TrainingSettings(epochs=args.pretrain_epochs or args.epochs, **common)
    spec = StudySpec(target=args.target, sources=args.sources, strategies=strategies, folds=args.folds,
                     pretrain=args.pretrain, settings=settings, pretrain_settings=pretrain_settings,
                     preset=args.preset, gpu_memory_gb=args.gpu_memory_gb, tolerance_mm=args.tolerance_mm,
                     tta=not args.no_tta, num_processes=args.num_processes,
                     fingerprint_voxels=args.fingerprint_voxels)
    study = Study(spec, roots_from_args(args), args.output, resolve=not launcher.deferred_device)
    if args.dry_run or args.launcher != "inline":
        return launch(study, launcher, args.dry_run)
    rows = study.run()
    print("\n" + summary_text(rows, study.paired, study.pretraining_rows, spec.tolerance_mm))
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
