"""``covtransfer_export_model``: package a trained model (weights of every fold, plans, labels, licence, citation,
provenance and checksums) into one zip to share."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from covtransfer.cli.common import add_root_arguments, roots_from_args, run_cli
from covtransfer.evaluation.postprocessing import POSTPROCESSING_FILE
from covtransfer.models.export import export_model
from covtransfer.models.provenance import UNKNOWN
from covtransfer.training.strategies import STRATEGY_NAMES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="covtransfer_export_model",
                                description="Package a trained model (the weights of every fold, plans, labels, "
                                            "licence, citation, provenance and checksums) into one zip to share; "
                                            "see documentation/models.md.")
    p.add_argument("-d", "--dataset", nargs="+", required=True,
                   help="dataset id(s) or name(s) of the run, as given to covtransfer_train (several for a "
                        "multi-lesion pre-training)")
    p.add_argument("-t", "--strategy", choices=STRATEGY_NAMES, required=True, help="the run's strategy")
    p.add_argument("-f", "--folds", nargs="+", help="folds to include (default: every finished fold)")
    p.add_argument("--tag", help="run tag: the strategy folder is <strategy>__<tag>")
    p.add_argument("-o", "--output", required=True, help="the package to write, <name>.zip")
    p.add_argument("--name", help="the model's name, used when installed (default <run>_<strategy folder>)")
    p.add_argument("--license", dest="licence", metavar="TEXT",
                   help="the model's licence (default: the 'licence' fields of the training datasets' dataset.json; "
                        f"without either, export is refused unless --license {UNKNOWN})")
    p.add_argument("--citation", metavar="TEXT|FILE",
                   help="what to cite, as text or a file (default: the model and its datasets' references)")
    p.add_argument("--postprocessing", metavar="FILE",
                   help="post-processing rules to package (default: the run's postprocessing.json, if it has one), "
                        "so that covtransfer_predict --postprocess works with the installed model")
    add_root_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    path, manifest = export_model(roots_from_args(args), args.dataset, args.strategy, args.output, args.folds,
                                  args.tag, args.name, args.licence, args.citation, args.postprocessing)
    rules = ", post-processing rules" if POSTPROCESSING_FILE in manifest["files"] else ""
    print(f"exported {manifest['name']} (folds {', '.join(manifest['folds'])}{rules}, licence {manifest['licence']}) "
          f"to {path}: {path.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - start:.1f} s")
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
