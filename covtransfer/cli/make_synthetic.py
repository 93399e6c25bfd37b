"""``covtransfer_make_synthetic``: write a synthetic chest-CT dataset (COVID-19-like, tumour or effusion)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import add_root_arguments, roots_from_args, run_cli
from covtransfer.datasets.synthetic import KINDS, SIZES, make_synthetic_dataset

LABEL_SETS = ("lesion", "lung-lesion")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="covtransfer_make_synthetic",
        description="Write a synthetic chest-CT dataset in the raw layout (RAW/DatasetNNN_Name). Kinds: covid "
                    "(ground-glass opacities), tumor (lung masses), effusion (pleural fluid). The same seed gives "
                    "the same voxels.")
    parser.add_argument("kind", choices=KINDS, help="lesion model")
    parser.add_argument("-d", "--dataset-id", type=int, required=True, help="dataset id NNN (0..999)")
    parser.add_argument("-n", "--num-train", type=int, required=True, help="number of training cases")
    parser.add_argument("--test", type=int, default=0, help="number of test cases (imagesTs/labelsTs; default 0)")
    parser.add_argument("--size", choices=list(SIZES), default="small",
                        help="tiny: tests (~28x56x56); small: CPU demo (~48x112x112, default); "
                             "clinical: 512x512x150-260 benchmarks")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--name", help="dataset name (default SyntheticCOVID / SyntheticTumor / SyntheticEffusion)")
    parser.add_argument("--labels", choices=LABEL_SETS, default="lesion",
                        help="lesion: background 0, lesion 1 (default); lung-lesion: background 0, lung 1, lesion 2, "
                             "so the true lungs and PO are known")
    parser.add_argument("--with-lungs", dest="labels", action="store_const", const="lung-lesion",
                        help="the same as --labels lung-lesion")
    parser.add_argument("--overwrite", action="store_true", help="replace the dataset folder if it exists")
    add_root_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = make_synthetic_dataset(args.kind, args.dataset_id, args.num_train, n_test=args.test, size=args.size,
                                    seed=args.seed, name=args.name, raw_root=roots_from_args(args).raw,
                                    with_lungs=args.labels == "lung-lesion", overwrite=args.overwrite)
    print(f"wrote {args.num_train} training and {args.test} test cases to {folder}")
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
