"""Does covtransfer's predictor score a model as nnU-Net's predictor does? nnU-Net's trained weights, both predictors.

For each nnU-Net run that ``learning.py`` kept in ``--work``, the weights of its ``checkpoint_final.pth`` are loaded
into covtransfer's network (parameter names mapped as in ``same_start.py``; the plans are covtransfer's, which the
run trained with), ``covtransfer_predict`` predicts the test cases without mirroring, and each case's DSC is set
beside the DSC of nnU-Net's own prediction in the run file. With the same network the two predictors differ only in
inference: sliding window, ensembling, export to the input grid.

Usage (after ``learning.py`` made nnU-Net runs in ``--work``)::

    python benchmarks/cross_predict.py --work learning_benchmark [--runs nnunet_zero_covid-thick_1 ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from covtransfer.atomic import write_json
from covtransfer.inference import EXPORT_VERSION
from covtransfer.network.checkpoint_io import load_checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from learning import raw_dataset_folder, score  # noqa: E402  (sibling scripts, not a package)
from learning_runs import RESULTS  # noqa: E402
from same_start import covtransfer_name  # noqa: E402


def raw_dataset(work: Path, run: str) -> Path:
    """The raw dataset folder of a run named ``<tool>_<init>_<dataset>_<seed>``."""
    return raw_dataset_folder(work / "raw", run.split("_")[2])


def covtransfer_checkpoint(work: Path, run: str, out: Path) -> Path:
    """A covtransfer checkpoint holding the weights nnU-Net trained in ``run``, written to ``out``."""
    dataset = raw_dataset(work, run).name
    template_path = next((work / "results" / dataset).glob("scratch__learning*/fold_all/checkpoint_final.pt"))
    template = load_checkpoint(template_path)
    trained = torch.load(work / "runs" / run / "model" / "fold_all" / "checkpoint_final.pth", map_location="cpu",
                         weights_only=False)["network_weights"]
    levels, head = template.configuration.n_stages - 1, next(iter(template.heads))
    state = {covtransfer_name(key.removeprefix("_orig_mod."), levels, head): value for key, value in trained.items()}
    state.pop(None, None)
    if set(state) != set(template.state_dict):
        raise SystemExit(f"{run}: nnU-Net's parameters do not map onto covtransfer's network "
                         f"({sorted(set(template.state_dict) ^ set(state))[:3]} ...)")
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint_final.pt", replace(template, state_dict=state))
    return out / "checkpoint_final.pt"


def cross_predict(work: Path, run: str, scratch: Path) -> dict:
    """Per case: the DSC of nnU-Net's prediction (from the run file) and of covtransfer's, with nnU-Net's weights."""
    checkpoint = covtransfer_checkpoint(work, run, scratch / run)
    dataset = raw_dataset(work, run)
    predictions = scratch / run / "predictions"
    subprocess.run([str(Path(sys.executable).parent / "covtransfer_predict"), "-i", str(dataset / "imagesTs"), "-o",
                    str(predictions), "-m", str(checkpoint), "--no-tta", "--device", "cpu", "--quiet"], check=True)
    ours = score(dataset / "labelsTs", predictions)
    theirs = json.loads((RESULTS / f"{run}.json").read_text())["cases"]
    return {case: {"nnunet": theirs[case]["dice"], "covtransfer": ours[case]["dice"]} for case in sorted(theirs)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="learning.py's working folder")
    parser.add_argument("--runs", nargs="+", help="nnU-Net runs (default: every one kept in --work)")
    parser.add_argument("--json", type=Path, help="also write the per-case results here")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    runs = args.runs or sorted(p.parent.parent.parent.name
                               for p in (work / "runs").glob("nnunet_*/model/fold_all/checkpoint_final.pth"))
    scratch = work / "cross_predict"
    results = {run: cross_predict(work, run, scratch) for run in runs}
    print(f"covtransfer export version {EXPORT_VERSION}; DSC % of nnU-Net's weights, by predictor\n")
    print("| run | cases | nnU-Net's predictor | covtransfer's | Δ mean [min, max] per case |")
    print("|---|---|---|---|---|")
    for run, cases in results.items():
        print(_row(run, list(cases.values())))
    if len(results) > 1:
        print(_row(f"all {len(results)} runs", [c for cases in results.values() for c in cases.values()]))
    if args.json:
        write_json(args.json, {"export": EXPORT_VERSION, "runs": results})


def _row(name: str, cases: list[dict]) -> str:
    """One table row: both predictors' mean DSC over ``cases`` and covtransfer's per-case difference."""
    a = np.array([c["nnunet"] for c in cases]) * 100
    b = np.array([c["covtransfer"] for c in cases]) * 100
    return (f"| {name} | {len(a)} | {a.mean():.2f} | {b.mean():.2f} | {(b - a).mean():+.2f} "
            f"[{(b - a).min():+.2f}, {(b - a).max():+.2f}] |")


if __name__ == "__main__":
    main()
