"""benchmarks/learning*.py: run files, staleness, budget estimates, take-off, the paired table and the head-init rule,
on made-up runs."""

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from scipy.stats import t as student_t

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from learning import attempt_leftovers  # noqa: E402
from learning_report import head_init_decision, seed_level_delta, summarise  # noqa: E402
from learning_runs import (Run, estimated_minutes, is_stale, load_records, make_record,  # noqa: E402
                           only_export_stale, takeoff_epoch, write_record)

from covtransfer.config import Roots  # noqa: E402
from covtransfer.inference import EXPORT_VERSION  # noqa: E402
from covtransfer.training import ENGINE_VERSION  # noqa: E402

PROTOCOL = {"epochs": 40, "iters_per_epoch": 25, "val_iters": 5, "data_round": 0}


def record(arm: str, seed: int, dice: dict[str, float], curve: list, kind: str = "covid", wall_s: float = 60.0,
           engine: str = str(ENGINE_VERSION)) -> tuple[Run, dict]:
    tool, init = arm.split("_")
    run = Run(tool, init, kind, seed)
    cases = {case: {"dice": value, "nsd": value / 2} for case, value in dice.items()}
    made = make_record(run, cases, curve, wall_s, PROTOCOL, engine, "abc123")
    return run, {**made, "export": EXPORT_VERSION} if tool == "covtransfer" else made


def row(report: str, *starts: str) -> str:
    return next(line for line in report.splitlines() if line.startswith("| " + " | ".join(starts)))


def test_take_off_is_the_first_epoch_above_the_threshold():
    assert takeoff_epoch([0.0, None, 0.005, 0.02, 0.5]) == 3
    assert takeoff_epoch([0.0, 0.01, None]) is None


def test_run_files_round_trip_and_name_tool_init_dataset_seed(tmp_path):
    run, content = record("covtransfer_zero", 3, {"a": 0.5}, [0.0, 0.2], kind="tumor")
    path = write_record(tmp_path, content)
    assert path.name == "covtransfer_zero_tumor_3.json"
    assert load_records(tmp_path, PROTOCOL) == {run: json.loads(path.read_text())}
    assert content["takeoff_epoch"] == 1 and content["engine"] == str(ENGINE_VERSION) and content["commit"]
    with pytest.raises(SystemExit, match="covtransfer_zero_tumor_3.json: made with protocol"):
        load_records(tmp_path, {**PROTOCOL, "epochs": 10})


def test_covtransfer_runs_of_an_older_engine_are_stale_and_nnunet_runs_never_are():
    assert not is_stale(record("covtransfer_prior", 0, {"a": 0.5}, [0.1])[1])
    assert is_stale(record("covtransfer_prior", 0, {"a": 0.5}, [0.1], engine="1")[1])
    assert not is_stale(record("nnunet_zero", 0, {"a": 0.5}, [0.1], engine="nnunetv2 2.8.1")[1])


def test_covtransfer_runs_predicted_by_an_older_export_are_stale_but_need_no_training():
    _, current = record("covtransfer_prior", 0, {"a": 0.5}, [0.1])
    older = {k: v for k, v in current.items() if k != "export"}  # files from before the export was recorded: 1
    assert not only_export_stale(current) and only_export_stale(older) and is_stale(older)
    retrain = {**older, "engine": "1"}
    assert is_stale(retrain) and not only_export_stale(retrain)
    _, theirs = record("nnunet_zero", 0, {"a": 0.5}, [0.1], engine="nnunetv2 2.8.1")
    assert not only_export_stale(theirs) and not is_stale(theirs)


def test_the_budget_estimate_is_the_median_wall_time_of_the_tools_earlier_runs():
    runs = dict([record("nnunet_zero", s, {"a": 0.5}, [0.1], wall_s=w) for s, w in enumerate((300, 480, 360))])
    assert estimated_minutes(runs, "nnunet") == 6.0
    assert estimated_minutes(runs, "covtransfer") == 6.0  # none of its own yet: any tool's
    assert estimated_minutes({}, "nnunet") is None


def test_paired_rows_average_each_case_over_the_seeds_and_leave_out_a_run_that_never_took_off():
    runs = dict([record("covtransfer_prior", 0, {"a": 0.8, "b": 0.6, "c": 0.7}, [0.0, 0.3]),
                 record("covtransfer_prior", 1, {"a": 0.6, "b": 0.4, "c": 0.5}, [0.2, 0.4]),
                 record("nnunet_zero", 0, {"a": 0.5, "b": 0.5, "c": 0.6}, [0.0, 0.0, 0.2]),
                 record("nnunet_zero", 1, {"a": 0.0, "b": 0.0, "c": 0.0}, [0.0, 0.0, 0.0])])
    planned = list(runs) + [Run("covtransfer", "zero", "covid", 0)]
    report = summarise(runs, planned, {})
    assert row(report, "covid", "covtransfer_prior", "2").split(" | ")[3:7] == [
        "60.0 ± 14.1", "30.0 ± 7.1", "70.0, 50.0", "1, 0"]
    assert row(report, "covid", "nnunet_zero", "2").split(" | ")[6] == "2, never"
    # all seeds: per case (0.7, 0.5, 0.6) − (0.25, 0.25, 0.3) → +45, +25, +30 points, mean +33.3
    everything = row(report, "covid", "covtransfer_prior − nnunet_zero", "all: 0, 1")
    assert everything.split(" | ")[4].startswith("+33.3 [")
    assert everything.endswith("| 3 / 0 |")
    # seed 0 alone (nnU-Net's seed 1 never took off): +30, +10, +10, mean +16.7
    assert row(report, "covid", "covtransfer_prior − nnunet_zero", "both took off: 0").split(" | ")[4].startswith(
        "+16.7 [")
    assert row(report, "covid", "covtransfer_prior / nnunet_zero").endswith(
        "| 0: 1 / 2, 1: 0 / never | 2 / 0 / 0 |")
    assert "4 of 5 planned are in; missing (1): covtransfer_zero_covid_0." in report
    assert "Head initialisation: undecided" in report


def test_head_init_rule_keeps_the_prior_only_if_it_is_not_lower_and_its_ci_reaches_above_zero():
    def arms(prior: list[float], zero: list[float]) -> dict:
        cases = [f"c{i}" for i in range(len(prior))]
        return {("covid", "covtransfer_prior"): {0: record("covtransfer_prior", 0, dict(zip(cases, prior)), [1])[1]},
                ("covid", "covtransfer_zero"): {0: record("covtransfer_zero", 0, dict(zip(cases, zero)), [1])[1]}}
    better = arms([0.6, 0.7, 0.8, 0.7], [0.5, 0.6, 0.7, 0.7])
    assert head_init_decision(better, {"covid"}, {0}).startswith("keep the prior")
    worse = arms([0.5, 0.6, 0.7, 0.7], [0.6, 0.7, 0.8, 0.7])
    assert head_init_decision(worse, {"covid"}, {0}).startswith("zero bias: the prior fails the rule on covid")
    assert head_init_decision(better, {"covid"}, {0, 1}).startswith("undecided")


def test_headline_tables_state_the_rule_and_the_targets_dataset_by_dataset():
    cases = ["a", "b", "c"]
    runs = dict([record("covtransfer_prior", 0, dict(zip(cases, (0.8, 0.6, 0.7))), [0.0, 0.3]),
                 record("covtransfer_zero", 0, dict(zip(cases, (0.7, 0.5, 0.6))), [0.0, 0.0, 0.2]),
                 record("nnunet_zero", 0, dict(zip(cases, (0.9, 0.7, 0.8))), [0.5]),
                 record("covtransfer_prior", 0, dict(zip(cases, (0.5, 0.5, 0.5))), [0.5], kind="tumor"),
                 record("nnunet_zero", 0, dict(zip(cases, (0.4, 0.5, 0.3))), [0.0, 0.5], kind="tumor")])
    report = summarise(runs, list(runs), {})
    # prior − zero: +10 points on every case; NSD is half the DSC in these records
    assert row(report, "covid", "1", "70.0", "60.0", "+10.0 [+10.0, +10.0]").endswith("| 1 / 2 | passes |")
    # prior − nnU-Net on covid: −10 on every case, and nnU-Net took off first
    assert row(report, "covid", "1", "70.0 / 80.0", "35.0 / 40.0", "-10.0 [-10.0, -10.0]").endswith(
        "| 1 / 0 | missed: DSC lower by 10.0; NSD lower by 5.0; CI upper -10.0; take-off later on 1 seed(s) |")
    # on tumour: +10, 0, +20 points, mean +10.0, taking off first
    assert row(report, "tumor", "1", "50.0 / 40.0").endswith("| 0 / 1 | met |")
    assert "| tumor | 1 | 50.0 | " not in report  # no head-initialisation row: tumour has no zero-bias run
    # in the detailed table, one row when every seed of both arms took off
    assert row(report, "covid", "covtransfer_prior − covtransfer_zero", "all, all took off: 0")
    assert "| covid | covtransfer_prior − covtransfer_zero | both took off" not in report


def test_take_off_order_pools_every_dataset_with_the_sign_test():
    # covid: prior epoch 1 vs zero epoch 2 (earlier); tumour seeds: same (both 0), earlier (0 vs never)
    runs = dict([record("covtransfer_prior", 0, {"a": 0.5}, [0.0, 0.3]),
                 record("covtransfer_zero", 0, {"a": 0.5}, [0.0, 0.0, 0.3]),
                 record("covtransfer_prior", 0, {"a": 0.5}, [0.3], kind="tumor"),
                 record("covtransfer_zero", 0, {"a": 0.5}, [0.3], kind="tumor"),
                 record("covtransfer_prior", 1, {"a": 0.5}, [0.3], kind="tumor"),
                 record("covtransfer_zero", 1, {"a": 0.5}, [0.0], kind="tumor")])
    report = summarise(runs, list(runs), {})
    # two earlier, one tie (left out): P(2 of 2 | p = 1/2) two-sided = 2 × 0.25 = 0.5
    assert row(report, "all", "covtransfer_prior / covtransfer_zero").endswith(
        "| 3 seeds | 2 / 1 / 0, sign test p 0.500 |")
    assert row(report, "all", "covtransfer_prior / nnunet_zero").endswith("| 0 seeds | 0 / 0 / 0, sign test p 1.000 |")


def test_seed_level_delta_is_welchs_interval_with_seeds_as_the_unit():
    # means 2 and 4, variances 1 and 4 over 3 seeds each: se² = 1/3 + 4/3, Welch df = (5/3)² / ((1/3)² / 2 + (4/3)² / 2)
    se, df = math.sqrt(5 / 3), (5 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    low, high, p = seed_level_delta([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]])
    half = student_t.ppf(0.975, df) * se
    assert (low, high) == pytest.approx((-2 - half, -2 + half))
    assert p == pytest.approx(2 * student_t.sf(2 / se, df))
    assert seed_level_delta([[1.0], [2.0, 3.0]]) is None and seed_level_delta([[1.0, 1.0], [2.0, 2.0]]) is None


def test_an_nnunet_run_never_clears_the_model_of_the_covtransfer_run_with_its_seed(tmp_path):
    bench = SimpleNamespace(work=tmp_path, roots=Roots(tmp_path / "raw", tmp_path / "pre", tmp_path / "results"),
                            dataset_folder=lambda kind: tmp_path / "raw" / "Dataset802_SyntheticTumor")
    model = tmp_path / "results" / "Dataset802_SyntheticTumor" / "scratch__learning4_zero"
    assert attempt_leftovers(bench, Run("covtransfer", "zero", "tumor", 4)) == [
        tmp_path / "runs" / "covtransfer_zero_tumor_4", model]
    assert attempt_leftovers(bench, Run("nnunet", "zero", "tumor", 4)) == [tmp_path / "runs" / "nnunet_zero_tumor_4"]


def test_the_report_estimates_the_missing_runs_from_each_tools_median_wall_time():
    runs = dict([record("covtransfer_prior", 0, {"a": 0.5}, [0.1], wall_s=600),
                 record("nnunet_zero", 0, {"a": 0.5}, [0.1], wall_s=1200)])
    planned = list(runs) + [Run("covtransfer", init, "covid", seed) for init in ("prior", "zero") for seed in (1, 2)] \
        + [Run("nnunet", "zero", "covid", seed) for seed in (1, 2)]
    # four covtransfer runs of 10 minutes and two nnU-Net runs of 20: 80 minutes
    assert "The missing runs need about 1.3 h of run time at the median wall time of each tool's earlier runs " \
           "(0.7 h with --jobs 2 on two cores)." in summarise(runs, planned, {})

