"""``covtransfer_plan_and_preprocess``: verify, fingerprint, plan and preprocess one or more raw datasets."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import add_root_arguments, roots_from_args, run_cli
from covtransfer.planning.fingerprint import FOREGROUND_VOXEL_BUDGET
from covtransfer.planning.planner import PRESETS
from covtransfer.plans import Plans
from covtransfer.workflow.plan_and_preprocess import plan_and_preprocess


def _describe(plans: Plans) -> str:
    parts = []
    for name, configuration in plans.configurations.items():
        spacing = "x".join(f"{s:g}" for s in configuration.spacing)
        patch = "x".join(str(p) for p in configuration.patch_size)
        parts.append(f"{name}: spacing {spacing} mm, patch {patch}, batch {configuration.batch_size}, "
                     f"{configuration.n_stages} stages")
    source = f" (plans from {plans.plans_from})" if plans.plans_from else ""
    return f"{plans.dataset_name}{source}: " + "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run :func:`~covtransfer.workflow.plan_and_preprocess.plan_and_preprocess`."""
    parser = argparse.ArgumentParser(
        prog="covtransfer_plan_and_preprocess",
        description="Verify each raw dataset (a broken one is refused before anything is written), fingerprint it, "
                    "plan a network (plans.json) and preprocess its training cases. Finished cases are skipped.")
    parser.add_argument("-d", "--datasets", nargs="+", required=True, metavar="ID",
                        help="dataset ids (1, 001) or folder names (Dataset001_Name)")
    parser.add_argument("--plans-from", metavar="ID|MODEL",
                        help="reuse this (already planned, or listed in -d) target dataset's plans, so source "
                             "datasets share its spacing, patch, topology and normalisation; or a model package "
                             "(.zip, or an installed model's name), so a target can transfer from that model")
    parser.add_argument("--gpu-memory-gb", type=float, default=8.0, metavar="G",
                        help="GPU memory the network is planned for (default 8)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="planning preset (default: 'default'); 'cpu' plans a small network for a few CPU cores, "
                             "'cpu-small' the same with patches of half the size")
    parser.add_argument("-c", "--configurations", nargs="+", metavar="CONFIG",
                        help="configurations to preprocess (default: every planned one)")
    parser.add_argument("-np", "--num-processes", type=int, metavar="N",
                        help="parallel worker processes (default: number of CPU cores); memory grows with N")
    parser.add_argument("--fingerprint-voxels", type=int, default=FOREGROUND_VOXEL_BUDGET, metavar="N",
                        help="foreground intensity samples per channel for the fingerprint (default 1e8, as nnU-Net; "
                             "fewer use less memory and time)")
    parser.add_argument("--overwrite", action="store_true", help="redo the fingerprint and every case; also lets a "
                        "dataset planned with --plans-from be planned on its own")
    parser.add_argument("--no-verify", action="store_true", help="skip the dataset check")
    parser.add_argument("--allow-spacing", action="store_true",
                        help="accept a spacing outside 0.05-20 mm or an extent over 2 m in the dataset check")
    parser.add_argument("--plan-only", action="store_true", help="write the fingerprint and plans, do not preprocess")
    add_root_arguments(parser)
    args = parser.parse_args(argv)
    if args.num_processes is not None and args.num_processes < 1:
        parser.error("-np must be at least 1")
    folders = plan_and_preprocess(args.datasets, roots_from_args(args), plans_from=args.plans_from,
                                  gpu_memory_gb=args.gpu_memory_gb, preset=args.preset,
                                  configurations=args.configurations, num_processes=args.num_processes,
                                  fingerprint_voxels=args.fingerprint_voxels,
                                  overwrite=args.overwrite, verify=not args.no_verify, plan_only=args.plan_only,
                                  allow_spacing=args.allow_spacing)
    for folder in folders:
        print(_describe(Plans.load(folder / "plans.json")))
        print(f"  -> {folder}")
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
