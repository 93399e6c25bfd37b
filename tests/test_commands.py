"""The README's two study commands through their command-line entry points with their default device, at smoke
scale (each in well under a minute on 2 cores), and the bad input they refuse with one line."""

import base64
import csv
import io
import re
import shutil
import sys
from pathlib import Path

import matplotlib.pyplot as plt

import pytest
import torch

from covtransfer.cli import demo, study, train
from covtransfer.experiments.demo import SMOKE_SCALE, default_parallel, print_demo_summary, run_demo
from covtransfer.experiments.spec import DEFAULT_STRATEGIES
from cli_checks import refusal, root_flags, run_command
from tiny_data import STUDY_FLAGS, write_study_datasets

def _check_outputs(folder, printed: str, strategies=DEFAULT_STRATEGIES) -> None:
    for name in ("results.csv", "results.md", "pretraining.csv", "study.json", "convergence.png",
                 "dice_boxplot.png"):
        assert (folder / name).is_file(), name
    assert list(folder.glob("overlay_*.png"))
    for strategy in strategies:
        assert f"| {strategy} |" in printed
    assert "Paired comparison with scratch" in printed and "final EMA pseudo Dice per source" in printed
    assert "## Verdict: each strategy against scratch" in printed and "DSC points over scratch" in printed
    with open(folder / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["strategy"] for row in table] == list(strategies)
    assert table[0]["delta_dice"] == "n/a" and table[1]["wilcoxon_p_dice"] != ""


# the smoke demo's setup runs inside the first test that uses it: 80 s of CPU, up to 280 s on a loaded machine
DEMO_TIMEOUT = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "out"
    code, printed = run_command(demo.main, ["--scale", "smoke", "-o", str(output)])
    assert code == 0
    return output, printed


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("study_cli")
    write_study_datasets(base / "raw")
    code, printed = run_command(study.main, STUDY_FLAGS + root_flags(base) + ["-o", str(base / "study")])
    assert code == 0
    return base, printed


@DEMO_TIMEOUT
def test_demo_command_with_defaults(demo_run):
    output, printed = demo_run
    _check_outputs(output / "seed_0" / "study", printed)
    assert "mean absolute PO error (burden), points: scratch " in printed
    assert not (output / "across_seeds").exists()
    if default_parallel(torch.device("cpu")) > 1:  # each job ran as its own process, its log kept
        assert "finished train_hybrid__from_multi_fold_all" in printed
        assert (output / "seed_0" / "study" / "logs" / "pretrain_multi.log").is_file()


def _embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


@DEMO_TIMEOUT
def test_demo_report_html_names_every_strategy_and_embeds_decodable_images(demo_run):
    output, printed = demo_run
    report = output / "seed_0" / "study" / "report.html"
    assert f"report: {report}" in printed
    page = report.read_text()
    assert "http" not in page and "<script" not in page
    for strategy in DEFAULT_STRATEGIES:
        assert f"<td>{strategy}</td>" in page
    images = _embedded_images(page)
    assert len(images) >= 2 + len(DEFAULT_STRATEGIES)
    for png in images:
        assert plt.imread(io.BytesIO(png)).ndim == 3
    # the smoke scale trains 2 iterations per model: the page says so above everything else
    assert page.count('<p class="banner">Smoke-scale run') == 1
    assert page.index('class="banner"') < page.index("<h2>Verdict")
    for strategy in DEFAULT_STRATEGIES[1:]:
        assert f"<li>{strategy} (multi): +0.0 DSC points over scratch" in page or \
            f"<li>{strategy} (multi): \u2212" in page


@DEMO_TIMEOUT
def test_demo_report_renders_in_headless_chromium(demo_run, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from report_screenshot import find_browser, screenshot

    if find_browser() is None:
        pytest.skip("no Chromium on PATH")
    shot = plt.imread(screenshot(demo_run[0] / "seed_0" / "study" / "report.html", tmp_path / "shot.png",
                                 height=1200))
    assert shot.shape[1] == 1280 and shot[..., :3].std() > 0.05


def test_study_command_with_defaults(study_run):
    base, printed = study_run
    _check_outputs(base / "study", printed)
    assert "--device cpu" in (base / "study" / "commands.txt").read_text()


@DEMO_TIMEOUT
def test_demo_refuses_bad_input(demo_run, capsys, tmp_path):
    output, _ = demo_run
    fresh = ["-o", str(tmp_path / "fresh")]
    refusal(demo.main, ["--scale", "smoke", "--strategies", "scratch,magic"] + fresh, capsys, "unknown strategy")
    refusal(demo.main, ["--scale", "smoke", "--strategies", ""] + fresh, capsys, "--strategies is empty")
    refusal(demo.main, ["--scale", "huge"] + fresh, capsys, "--scale 'huge'")
    refusal(demo.main, ["--scale", "smoke", "--seeds", "0"] + fresh, capsys, "at least one seed")
    refusal(demo.main, ["--scale", "smoke", "--parallel", "0"] + fresh, capsys, "at least one job at a time")
    assert not (tmp_path / "fresh").exists()
    # the smoke run's folder holds data and results of another scale
    refusal(demo.main, ["--scale", "cpu", "-o", str(output)], capsys, "synthetic data of another demo run")


def test_study_refuses_bad_input(study_run, capsys, tmp_path):
    base, _ = study_run
    roots = root_flags(base)
    fresh = ["-o", str(tmp_path / "fresh")]
    refusal(study.main, STUDY_FLAGS + roots + fresh + ["--strategies", "scratch,magic"], capsys, "unknown strategy")
    refusal(study.main, STUDY_FLAGS + roots + fresh + ["--strategies", "pretrain"], capsys, "unknown strategy")
    refusal(study.main, STUDY_FLAGS + roots + fresh + ["--folds", "x"], capsys, "unknown fold 'x'")
    refusal(study.main, STUDY_FLAGS + roots + fresh + ["--folds", "0", "0"], capsys, "fold twice")
    refusal(study.main, STUDY_FLAGS + roots + fresh + ["--folds", "7"], capsys, "unknown fold 7")
    refusal(study.main, STUDY_FLAGS + roots + fresh + ["--sources", "11", "12"], capsys, "includes the target")
    refusal(study.main, STUDY_FLAGS + roots + fresh + ["--target", "99"], capsys, "no dataset with id 99")
    # the study folder holds results of another configuration
    refusal(study.main, STUDY_FLAGS + roots + ["-o", str(base / "study"), "--epochs", "2"], capsys,
            "holds a study of another configuration (pretrain_settings.epochs 1 there, 2 now; settings.epochs 1 there")
    # a fresh study folder, but the results root holds models trained with other settings
    refusal(study.main, STUDY_FLAGS + roots + fresh + ["--epochs", "2"], capsys, "was trained with other settings")


def test_study_refuses_a_pretraining_from_sources_planned_otherwise(study_run, capsys, tmp_path):
    base, _ = study_run
    copy = tmp_path / "copy"
    for name in ("raw", "preprocessed", "results"):
        shutil.copytree(base / name, copy / name)
    # planned again with the default planner, the target's plans no longer match those the pre-training used
    flags = [f for f in STUDY_FLAGS if f not in ("--preset", "cpu")]
    refusal(study.main, flags + root_flags(copy) + ["-o", str(copy / "study")], capsys,
            "was trained with plans other than those of Dataset011_Target", after_progress=True)


def test_help_is_plain_text_and_the_study_usage_marks_its_datasets_required(capsys):
    for main in (demo.main, study.main, train.main):
        with pytest.raises(SystemExit) as stop:
            main(["--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "``" not in text and "covtransfer_" in text.split("\n\n")[1]  # the description, without markup
    with pytest.raises(SystemExit) as stop:
        study.main([])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "the following arguments are required: --target, --sources" in err
    assert "--target TARGET --sources SOURCES" in err and "[--target" not in err


def test_demo_runs_several_seeds_and_summarises_them(tmp_path, capsys):
    # in this process (--parallel 1): the default command above runs its jobs as parallel processes
    result = run_demo(tmp_path, "cpu", seed=3, scale=SMOKE_SCALE, n_seeds=2, strategies=["scratch", "finetune"],
                      parallel=1)
    assert [run.seed for run in result.runs] == [3, 4]
    assert all((tmp_path / f"seed_{s}" / "study" / "results.md").is_file() for s in (3, 4))
    summary = result.across_seeds
    assert summary == tmp_path / "across_seeds"
    with open(summary / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [(row["strategy"], row["seeds"]) for row in table] == [("scratch", "2"), ("finetune", "2")]
    assert table[1]["pairs_dice"] == str(2 * SMOKE_SCALE.n_target_test)
    text = (summary / "results.md").read_text()
    assert "± " in text and "Paired comparison with scratch" in text and "across seeds" in text
    assert (summary / "pretraining.csv").is_file()
    capsys.readouterr()
    print_demo_summary(result)
    printed = capsys.readouterr().out
    assert "# seed 3" in printed and "# seed 4" in printed and "# across seeds" in printed
    assert "Seeds 3, 4: mean ± sd across seeds" in printed
