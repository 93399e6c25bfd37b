"""``covtransfer_predict``: segment new scans with one or more trained folds, writing label maps on the input grid."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Sequence

from covtransfer.cli.common import add_device_argument, add_root_arguments, roots_from_args, run_cli
from covtransfer.data.raw_guard import refuse_raw_dataset
from covtransfer.devices import resolve_device
from covtransfer.errors import CovtransferError
from covtransfer.inference.model_loading import CHECKPOINT_CHOICES, dataset_checkpoints
from covtransfer.inference.cpu_runtime import CPU_RUNTIME_ENV
from covtransfer.inference.predictor import DEFAULT_STEP, FAST_STEP, predict_folder
from covtransfer.models.sources import model_checkpoints
from covtransfer.training.strategies import STRATEGY_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covtransfer_predict",
        description="Predict label maps for new images with trained models: sliding window, mirroring test-time "
                    "augmentation and fold ensembling. Outputs lie exactly on each input's grid, in its file format.")
    parser.add_argument("-i", "--input", required=True,
                        help="an image file, a folder of <case>_0000.<ending> files (one per channel), a folder of "
                             "single-channel images, a raw dataset folder (its imagesTs/ is used), or a DICOM CT "
                             "series: a folder of .dcm files, or a folder of subfolders with one series each (each "
                             "predicted into <folder name>.nii.gz)")
    parser.add_argument("-o", "--output", required=True, help="output folder (not the input folder, not inside a "
                                                                  "raw dataset folder)")
    model = parser.add_argument_group("model (either -d and -t, or -m)")
    model.add_argument("-d", "--dataset", help="dataset id or name under the results root")
    model.add_argument("-t", "--strategy", help="training strategy folder (scratch, finetune, hybrid, ...)")
    model.add_argument("-f", "--folds", nargs="+", help="folds to ensemble (default: every trained fold)")
    model.add_argument("--tag", help="run tag: the strategy folder is <strategy>__<tag>")
    model.add_argument("-m", "--model", nargs="+",
                       help="an installed model's name or a model package (.zip; every fold it holds is used), "
                            "or fold folder(s), strategy folder(s) holding fold_* folders, or checkpoint file(s)")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_CHOICES, default="final",
                        help="which checkpoint of each fold (default: final)")
    parser.add_argument("--no-tta", "--disable-tta", dest="no_tta", action="store_true",
                        help="disable mirroring test-time augmentation (~8x faster; nnU-Net's --disable_tta)")
    parser.add_argument("--step", "--step-size", dest="step", type=float,
                        help="window step as a fraction of the patch (default 0.5, 1.0 with --fast; nnU-Net's "
                             "--step_size)")
    parser.add_argument("--fast", action="store_true",
                        help=f"speed preset: step {FAST_STEP} (8x fewer windows in 3-D) and no mirroring; an explicit "
                             "--step still wins. Its accuracy cost is in documentation/prediction.md")
    parser.add_argument("--no-cpu-runtime", action="store_true",
                        help="on the CPU, run the plain PyTorch network even when the cpu-fast extra is installed "
                             f"(same as {CPU_RUNTIME_ENV}=0)")
    add_device_argument(parser, "where to predict")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <case>.npz with float16 class probabilities on the input grid")
    parser.add_argument("--postprocess", action="store_true",
                        help="apply the largest-component rules of postprocessing.json from the model folder")
    parser.add_argument("--dicom-seg", action="store_true",
                        help="also write <case>.dcm, a DICOM SEG referencing the source series (DICOM input only)")
    parser.add_argument("--overlays", action="store_true",
                        help="also write <case>_overlay.png: axial and coronal slices through the largest "
                             "predicted component with its outline on the lung window")
    parser.add_argument("--statistics", action="store_true",
                        help="then write <case>.statistics.json and statistics.csv: lung and lesion volumes, PO and "
                             "PHO per lung, lesion count, grades (documentation/evaluation.md); with --dicom-seg also "
                             "<case>_sr.dcm, a DICOM SR of them")
    parser.add_argument("--continue", dest="skip_existing", action="store_true",
                        help="skip cases whose outputs already exist")
    parser.add_argument("--allow-spacing", action="store_true",
                        help="warn instead of refusing a spacing outside 0.05-20 mm or an extent over 2 m")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no note on mirroring's cost")
    add_root_arguments(parser)
    return parser


def _checkpoints(args: argparse.Namespace, stack: contextlib.ExitStack) -> list:
    if args.model:
        if args.dataset or args.strategy or args.folds or args.tag:
            raise CovtransferError("give either -m or -d/-t (with -f/--tag), not both")
        return model_checkpoints(args.model, roots_from_args(args).results, args.checkpoint, stack)
    if not (args.dataset and args.strategy):
        raise CovtransferError("name the model: -d DATASET -t STRATEGY, or -m MODEL (an installed name, a .zip or "
                               "a folder)")
    return dataset_checkpoints(roots_from_args(args).results, args.dataset, args.strategy, args.folds, args.tag,
                               args.checkpoint, STRATEGY_NAMES)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    refuse_raw_dataset(args.output, "-o", roots_from_args(args).raw)
    device = resolve_device(args.device)
    with contextlib.ExitStack() as stack:
        return _predict(args, device, _checkpoints(args, stack))


def _predict(args: argparse.Namespace, device, checkpoints: list) -> int:
    step = args.step if args.step is not None else (FAST_STEP if args.fast else DEFAULT_STEP)
    tta = not (args.no_tta or args.fast)
    written = predict_folder(args.input, args.output, checkpoints, device, tta, step, args.save_probabilities,
                             args.postprocess, args.skip_existing, not args.quiet, args.dicom_seg, args.overlays,
                             cpu_runtime=not args.no_cpu_runtime, allow_spacing=args.allow_spacing,
                             statistics=args.statistics)
    print(f"{len(written)} case(s) predicted with {len(checkpoints)} model(s) into {args.output}")
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
