"""The study report on hand-made rows: the verdicts in words, the banner of untrained runs, the slice that shows the
lesion, n/a in per_case.csv, the plots' units and epoch axis, and the legends that stay off the curves."""

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from covtransfer.config import Roots
from covtransfer.experiments.aggregation import aggregate
from covtransfer.experiments.paired import paired_rows
from covtransfer.experiments.report import write_report
from covtransfer.experiments.report_figures import convergence_figure, dice_boxplot, lesion_slice
from covtransfer.experiments.report_html import markdown_to_html, report_html, untrained_banner
from covtransfer.experiments.study_commands import StudyCommands
from covtransfer.experiments.spec import StudySpec
from covtransfer.experiments.study_record import write_study_record
from covtransfer.experiments.verdict import verdict, verdict_text
from covtransfer.training.run_log import progress_figure
from covtransfer.training.trainer import TrainingSettings
from tiny_data import write_raw_dataset


def _row(strategy: str, dice: list[float], pretraining: str = "multi") -> dict:
    return {"pretraining": pretraining, "strategy": strategy,
            "per_case": [{"fold": "all", "case": f"c{i}", "label": 1, "dice": d, "nsd": d} for i, d in
                         enumerate(dice)]}


def test_verdict_of_a_hand_computed_paired_comparison():
    # differences 0.01 and 0.03: mean +2.0 points; the resampled means 0.01, 0.02, 0.03 come with probabilities
    # 1/4, 1/2, 1/4, so the 2.5 % and 97.5 % points are 0.01 and 0.03; both pairs positive: exact p = 2 / 2^2 = 0.5
    paired = paired_rows([_row("scratch", [0.50, 0.60], "none"), _row("hybrid", [0.51, 0.63])])
    assert verdict(paired[0]) == ("hybrid (multi): +2.0 DSC points over scratch [+1.0, +3.0], p = 0.5, "
                                  "not significant on 2 test cases")


def test_verdict_says_significant_and_which_way():
    # six positive differences: the exact two-sided Wilcoxon p is 2 / 2^6 = 0.03125; mean 0.035
    base = [0.5] * 6
    better = [0.5 + d for d in (0.01, 0.02, 0.03, 0.04, 0.05, 0.06)]
    up, = paired_rows([_row("scratch", base, "none"), _row("finetune", better)])
    assert verdict(up).startswith("finetune (multi): +3.5 DSC points over scratch [+")
    assert verdict(up).endswith("], p = 0.031, significantly better on 6 test cases")
    down, = paired_rows([_row("scratch", better, "none"), _row("encoder", base)])
    assert verdict(down).startswith("encoder (multi): \u22123.5 DSC points over scratch [\u2212")
    assert verdict(down).endswith("significantly worse on 6 test cases")


def test_verdict_of_the_issue_example_and_of_untestable_comparisons():
    row = {"pretraining": "none", "strategy": "hybrid", "pairs_dice": 16, "delta_dice": 0.007,
           "delta_dice_ci_low": -0.003, "delta_dice_ci_high": 0.017, "wilcoxon_p_dice": 0.2}
    assert verdict(row) == ("hybrid: +0.7 DSC points over scratch [\u22120.3, +1.7], p = 0.2, not significant on "
                            "16 test cases")
    assert verdict({**row, "wilcoxon_p_dice": 0.0002}).endswith("p < 0.001, significantly better on 16 test cases")
    one, = paired_rows([_row("scratch", [0.5], "none"), _row("hybrid", [0.6])])
    assert verdict(one) == "hybrid (multi): +10.0 DSC points over scratch on 1 test case, too few to test"
    same, = paired_rows([_row("scratch", [0.0, 0.0], "none"), _row("hybrid", [0.0, 0.0])])
    assert verdict(same) == ("hybrid (multi): +0.0 DSC points over scratch [+0.0, +0.0], the same DSC as scratch on "
                             "each of the 2 test cases, nothing to test")
    text = verdict_text([row, same])
    assert text.startswith(f"- {verdict(row)}\n- {verdict(same)}\n\n")
    page = markdown_to_html(text)
    assert page.startswith("<ul><li>hybrid: +0.7") and page.count("<li>") == 2 and "</ul>" in page


def test_banner_only_for_models_trained_a_few_iterations():
    smoke = untrained_banner({"settings": {"epochs": 1, "iters_per_epoch": 2}})
    assert smoke.startswith("Smoke-scale run: each model was trained for only 2 iterations")
    assert "not trained" in smoke
    assert untrained_banner({"settings": {"epochs": 160, "iters_per_epoch": 25}}) is None
    assert untrained_banner(None) is None and untrained_banner({}) is None


def test_report_page_has_the_banner_only_when_the_models_are_untrained(tmp_path):
    roots = Roots(tmp_path / "raw", tmp_path / "preprocessed", tmp_path / "results")
    write_raw_dataset(roots.raw, 11, "Target", n_train=1)
    pages = {}
    for epochs in (1, 100):
        folder = tmp_path / f"study_{epochs}"
        write_study_record(folder, {"settings": {"epochs": epochs, "iters_per_epoch": 2}, "tolerance_mm": 2.0})
        pages[epochs] = report_html(folder, [], "11", roots, [], [])
    assert pages[1].count('class="banner"') == 1 and "only 2 iterations" in pages[1]
    assert "banner" not in pages[100].split("</style>")[1]
    assert "τ = 2 mm" in pages[100] and "conv. epoch: the first epoch" in pages[100]


def test_lesion_slice_shows_the_reference_lesion_first():
    reference, prediction = np.zeros((8, 6, 6), bool), np.zeros((8, 6, 6), bool)
    reference[5, 2:4, 2] = True  # 2 voxels of lesion on slice 5
    reference[1, 2, 2] = True  # and 1 on slice 1
    prediction[2, :, :] = True  # a large false positive on slice 2 (36 voxels)
    assert lesion_slice(reference, prediction) == 5
    assert lesion_slice(np.zeros_like(reference), prediction) == 2  # no lesion: where the model was wrong
    assert lesion_slice(np.zeros_like(reference), np.zeros_like(prediction)) == 4  # neither: the middle slice


def _history(epochs: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0, "val_loss": 1.0, "val_dice": 0.1 * e, "ema_dice": 0.05 * e, "lr": 0.01,
             "epoch_time": 2.0} for e in range(epochs)]


def test_plots_in_percent_with_whole_epochs():
    rows = [{**_row("scratch", [0.4, 0.6], "none"), "histories": [_history(1)]}]
    fig = convergence_figure(rows)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_xlim() == (-0.5, 0.5)
    assert [t for t in ax.get_xticks() if -0.5 <= t <= 0.5] == [0]
    assert ax.get_ylim() == (0, 100) and "%" in ax.get_ylabel()
    plt.close(fig)
    fig = dice_boxplot(rows)
    box = fig.axes[0]
    assert "%" in box.get_ylabel()
    drawn = np.concatenate([line.get_ydata() for line in box.lines])
    assert (drawn.min(), drawn.max()) == (40.0, 60.0)  # the whiskers end at the two cases, 40 % and 60 %
    plt.close(fig)


def _inside(inner, outer) -> bool:
    return inner.x0 < outer.x1 and inner.x1 > outer.x0 and inner.y0 < outer.y1 and inner.y1 > outer.y0


def test_legends_lie_beside_the_axes():
    fig = progress_figure(_history(5))
    fig.canvas.draw()
    legend = fig.axes[0].get_legend().get_window_extent()
    assert not _inside(legend, fig.axes[0].get_window_extent())
    assert fig.axes[0].get_legend().get_texts()[-1].get_text() == "pseudo Dice (EMA)"
    plt.close(fig)
    fig = convergence_figure([{**_row("scratch", [0.5], "none"), "histories": [_history(5)]}])
    fig.canvas.draw()
    assert not _inside(fig.axes[0].get_legend().get_window_extent(), fig.axes[0].get_window_extent())
    plt.close(fig)


def test_per_case_csv_writes_undefined_values_as_n_a(tmp_path):
    roots = Roots(tmp_path / "raw", tmp_path / "preprocessed", tmp_path / "results")
    write_raw_dataset(roots.raw, 11, "Target", n_train=1, n_test=1)
    case = {"fold": "all", "case": "target_ts000", "label": 1, "n_ref": 10, "n_pred": 0, "dice": 0.0,
            "nsd": float("nan"), "hd95": None, "sensitivity": 0.0, "precision": None, "specificity": 1.0,
            "accuracy": 0.9, "mcc": 0.0}
    rows = [{**aggregate("none", "scratch", [case], [_history(1)], [2.0]), "per_case": [case],
             "histories": [_history(1)]}]
    write_report(tmp_path / "study", rows, ["covtransfer_train -d 11"], "11", roots)
    with open(tmp_path / "study" / "per_case.csv") as handle:
        table = list(csv.DictReader(handle))
    assert table == [{"pretraining": "none", "strategy": "scratch", "fold": "all", "case": "target_ts000",
                      "label": "1", "dice": "0.0", "nsd": "n/a", "hd95": "n/a"}]
    assert "nan" not in (tmp_path / "study" / "per_case.csv").read_text()


def test_commands_name_every_path_absolute():
    spec = StudySpec(target="11", sources=["12"])
    commands = StudyCommands(spec, Roots(Path("raw"), Path("pre"), Path("res")), "cpu", Path("study"))
    argv = commands.train(["11"], "finetune", "0", TrainingSettings(), Path("res/pretrain/fold_all"), "from_multi")
    paths = [argv[i + 1] for i, flag in enumerate(argv) if flag in ("--pretrained", "--raw", "--preprocessed",
                                                                     "--results")]
    assert len(paths) == 4 and all(Path(p).is_absolute() for p in paths)
    assert paths[0] == str(Path("res/pretrain/fold_all").absolute())
