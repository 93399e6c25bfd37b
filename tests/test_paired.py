"""Paired statistics against scratch, per-source pre-training EMA, the across-seeds summary and the study record,
checked on small hand-computed examples."""

import math

import numpy as np
import pytest

from covtransfer.errors import CovtransferError
from covtransfer.experiments.paired import (bootstrap_ci, paired_differences, paired_rows, paired_table,
                                            wilcoxon_p)
from covtransfer.experiments.pretraining_summary import pretraining_line, pretraining_rows, pretraining_table
from covtransfer.experiments.seeds import SeedRun, pooled_paired, seed_rows, seeds_table
from covtransfer.experiments.study_record import check_study_folder, differences, write_study_record


def _cases(values: dict[tuple[str, str], float], nsd_shift: float = 0.0) -> list[dict]:
    return [{"fold": fold, "case": case, "label": 1, "dice": v, "nsd": v + nsd_shift}
            for (fold, case), v in values.items()]


def test_wilcoxon_matches_the_exact_hand_computed_p_value():
    # |d| ranks 1..5, the only negative difference has rank 1: W- = 1. Sign patterns with a rank sum <= 1 are {} and
    # {1}, 2 of 32; two-sided p = 2 * 2 / 32 = 0.125
    assert wilcoxon_p(np.array([0.1, 0.2, 0.3, 0.4, -0.05])) == pytest.approx(0.125)


def test_bootstrap_interval_of_two_pairs_is_their_range():
    # resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5 % and 97.5 % points are 0, 1
    assert bootstrap_ci(np.array([0.0, 1.0])) == (0.0, 1.0)
    assert bootstrap_ci(np.array([0.2, 0.2, 0.2])) == pytest.approx((0.2, 0.2))
    low, high = bootstrap_ci(np.array([0.1, 0.2, 0.3, 0.4, -0.05]))
    assert -0.05 <= low < 0.19 < high <= 0.4
    assert bootstrap_ci(np.array([0.1, 0.2, 0.3, 0.4, -0.05])) == (low, high)  # seeded


def test_undefined_statistics_are_nan_not_errors():
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([0.3])))
    assert math.isnan(wilcoxon_p(np.array([0.3])))
    assert math.isnan(wilcoxon_p(np.zeros(4)))
    assert math.isnan(wilcoxon_p(np.zeros(0)))


def test_cases_pair_by_fold_and_case_across_folds():
    scratch = _cases({("0", "a"): 0.5, ("0", "b"): 0.6, ("1", "a"): 0.2, ("1", "c"): 0.9})
    # listed in another order; case a of fold 1 must pair with fold 1's a, not fold 0's; c has no partner
    other = _cases({("1", "a"): 0.5, ("0", "b"): 0.7, ("0", "a"): 0.4})
    assert sorted(paired_differences(other, scratch, "dice")) == pytest.approx([-0.1, 0.1, 0.3])
    other[0]["dice"] = float("nan")  # an undefined value drops its pair
    assert sorted(paired_differences(other, scratch, "dice")) == pytest.approx([-0.1, 0.1])


def test_paired_rows_one_per_pretraining_and_strategy():
    base = {("0", c): v for c, v in zip("abcde", [0.5, 0.5, 0.5, 0.5, 0.5])}
    better = {key: v + d for (key, v), d in zip(base.items(), [0.1, 0.2, 0.3, 0.4, -0.05])}
    rows = [{"pretraining": "none", "strategy": "scratch", "per_case": _cases(base)},
            {"pretraining": "multi", "strategy": "finetune", "per_case": _cases(better)},
            {"pretraining": "Dataset002_A", "strategy": "finetune", "per_case": _cases(base)}]
    paired = paired_rows(rows)
    assert [(p["pretraining"], p["strategy"]) for p in paired] == [("multi", "finetune"), ("Dataset002_A", "finetune")]
    multi, same = paired
    assert multi["pairs_dice"] == 5
    assert multi["delta_dice"] == pytest.approx(0.19)
    assert multi["wilcoxon_p_dice"] == pytest.approx(0.125)
    assert multi["delta_nsd"] == pytest.approx(0.19)
    assert same["delta_dice"] == 0.0 and math.isnan(same["wilcoxon_p_dice"])
    table = paired_table(paired)
    assert "| multi | finetune | 5 | +19.0 |" in table and "0.125" in table
    assert "| Dataset002_A | finetune | 5 | +0.0 | [+0.0, +0.0] | n/a |" in table
    assert paired_rows(rows[1:]) == []  # no scratch, nothing to pair with


def test_pretraining_rows_read_the_final_task_ema_and_tolerate_old_histories():
    history = [{"epoch": 0, "task_ema": {"A": 0.1, "B": None}, "task_dice": {"A": 0.1}},
               {"epoch": 1, "task_ema": {"A": 0.55, "B": 0.2}, "task_dice": {"A": 0.9, "B": 0.2}}]
    rows = pretraining_rows("multi", ["A", "B", "C"], history)
    assert [r["final_ema"] for r in rows[:2]] == [0.55, 0.2]
    assert rows[0]["final_pseudo_dice"] == 0.9 and rows[0]["epochs"] == 2
    assert math.isnan(rows[2]["final_ema"])
    assert pretraining_line(rows) == "pre-training multi: final EMA pseudo Dice per source: A 0.550, B 0.200, C n/a"
    old = pretraining_rows("multi", ["A"], [{"epoch": 0, "ema_dice": 0.3}])
    assert math.isnan(old[0]["final_ema"])
    assert "| multi | A | 1 | n/a | n/a |" in pretraining_table(old)
    assert math.isnan(pretraining_rows("A", ["A"], [])[0]["final_ema"])


def test_seeds_are_summarised_and_pooled_by_seed():
    def run(seed, scratch, finetune):
        rows = [{"pretraining": "none", "strategy": "scratch", "per_case": _cases(scratch), "dice_mean": 0.0},
                {"pretraining": "multi", "strategy": "finetune", "per_case": _cases(finetune), "dice_mean": 0.0}]
        for row in rows:
            values = [c["dice"] for c in row["per_case"]]
            for metric in ("dice", "nsd", "sensitivity", "precision", "mcc"):
                row[f"{metric}_mean"] = float(np.mean(values))
        return SeedRun(seed, rows, paired_rows(rows), [], None)

    # the same case ids in both seeds are different cases: they pair within their seed only
    runs = [run(0, {("all", "a"): 0.2, ("all", "b"): 0.4}, {("all", "a"): 0.3, ("all", "b"): 0.6}),
            run(1, {("all", "a"): 0.6, ("all", "b"): 0.6}, {("all", "a"): 0.6, ("all", "b"): 0.7})]
    summary = seed_rows(runs)
    finetune = summary[1]
    assert finetune["seeds"] == 2
    assert finetune["dice_mean"] == pytest.approx((0.45 + 0.65) / 2)
    assert finetune["dice_sd"] == pytest.approx(np.std([0.45, 0.65], ddof=1))
    assert finetune["delta_dice_mean"] == pytest.approx((0.15 + 0.05) / 2)
    pooled = pooled_paired(runs)[0]
    assert pooled["pairs_dice"] == 4
    assert pooled["delta_dice"] == pytest.approx((0.1 + 0.2 + 0.0 + 0.1) / 4)
    assert "| multi | finetune | 2 | 55.0 ± 14.1 |" in seeds_table(summary)
    assert math.isnan(seed_rows(runs[:1])[0]["dice_sd"])


def test_study_record_refuses_another_configuration(tmp_path):
    record = {"target": "T", "sources": ["A"], "configuration": "3d_fullres", "preset": "cpu", "gpu_memory_gb": 8.0,
              "fingerprint_voxels": 10, "tta": False, "settings": {"epochs": 2, "seed": 1},
              "pretrain_settings": {"epochs": 3}, "strategies": ["scratch"], "folds": ["all"]}
    check_study_folder(tmp_path, record)  # empty folder: nothing to compare
    write_study_record(tmp_path, record)
    check_study_folder(tmp_path, {**record, "strategies": ["scratch", "hybrid"], "folds": ["0"]})  # more runs: fine
    with pytest.raises(CovtransferError, match=r"another configuration \(settings.epochs 2 there, 5 now\)"):
        check_study_folder(tmp_path, {**record, "settings": {"epochs": 5, "seed": 1}})
    assert differences({"a": 1, "old": 2}, {"a": 1, "new": 3}) == []  # keys only one side knows are not compared
    (tmp_path / "study.json").unlink()
    (tmp_path / "results.csv").write_text("x\n")
    with pytest.raises(CovtransferError, match="no study.json"):
        check_study_folder(tmp_path, record)
