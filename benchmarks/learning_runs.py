"""The learning benchmark's run files: one JSON per finished run under ``benchmarks/results/learning/``.

A run is one arm (a tool and its head initialisation) trained on one dataset with one seed; its file
``<tool>_<init>_<dataset>_<seed>.json`` holds the per-case DSC and NSD, the EMA curve, the take-off epoch, the wall
time, the commit, the engine version and the data seed. The folder is the benchmark's memory: a run whose file is
there is not trained again, the report is written from whatever files are there, and a covtransfer run made by an
older training engine (``covtransfer.training.ENGINE_VERSION``) is marked stale and trained again; one whose test
cases were predicted by an older export (``covtransfer.inference.EXPORT_VERSION``) is stale too, and predicted again
from its kept model when the work folder still holds it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from covtransfer.inference import EXPORT_VERSION
from covtransfer.training import ENGINE_VERSION

RESULTS = Path(__file__).resolve().parent / "results" / "learning"
# (tool, head initialisation): covtransfer with its foreground prior or nnU-Net's zero bias, and nnU-Net itself
ARMS = (("covtransfer", "prior"), ("covtransfer", "zero"), ("nnunet", "zero"))
TAKEOFF_DICE = 0.01  # a run has taken off in the first epoch whose EMA pseudo Dice exceeds this


@dataclass(frozen=True)
class Run:
    """One training run: which tool with which head initialisation, on which dataset, with which seed."""

    tool: str
    init: str
    kind: str
    seed: int

    @property
    def arm(self) -> str:
        return f"{self.tool}_{self.init}"

    @property
    def name(self) -> str:
        return f"{self.arm}_{self.kind}_{self.seed}"


def takeoff_epoch(curve: list) -> int | None:
    """The first epoch whose EMA pseudo Dice exceeds ``TAKEOFF_DICE``; None if the run never took off."""
    return next((epoch for epoch, value in enumerate(curve) if value is not None and value > TAKEOFF_DICE), None)


def git_commit() -> str:
    """The checked-out commit, with ``+dirty`` when the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def make_record(run: Run, cases: dict, curve: list, wall_s: float, protocol: dict, engine: str,
                commit: str) -> dict:
    """The content of a run file; ``commit`` is the checkout the run started from (``git_commit()``)."""
    return {"run": asdict(run), "cases": cases, "curve": curve, "takeoff_epoch": takeoff_epoch(curve),
            "wall_s": round(wall_s, 1), "commit": commit, "engine": engine, "protocol": protocol,
            "machine": f"{platform.machine()} {os.cpu_count()} cores", "finished": time.strftime("%Y-%m-%d %H:%M")}


def write_record(folder: Path, record: dict) -> Path:
    """Write a run file atomically; returns its path."""
    run = Run(**record["run"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run.name}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path


def is_stale(record: dict) -> bool:
    """A covtransfer run made by another training engine or predicted by another export than this checkout's."""
    return record["run"]["tool"] == "covtransfer" and (record.get("engine") != str(ENGINE_VERSION)
                                                       or only_export_stale(record))


def only_export_stale(record: dict) -> bool:
    """A covtransfer run of this training engine whose test cases were predicted by an older export (files without
    ``export`` are of version 1): predicting again from its model brings it up to date."""
    return (record["run"]["tool"] == "covtransfer" and record.get("engine") == str(ENGINE_VERSION)
            and record.get("export", 1) != EXPORT_VERSION)


def load_records(folder: Path, protocol: dict) -> dict[Run, dict]:
    """Every run file of ``folder`` by run; a file of another protocol (schedule, data draw) is refused."""
    records = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("protocol") != protocol:
            raise SystemExit(f"{path}: made with protocol {record.get('protocol')}, not {protocol}; "
                             "use another --results folder for another schedule or data round")
        records[Run(**record["run"])] = record
    return records


def estimated_minutes(records: dict[Run, dict], tool: str) -> float | None:
    """The median wall time of the tool's earlier runs (any tool's if it has none), in minutes; None if no run yet."""
    walls = [r["wall_s"] for run, r in records.items() if run.tool == tool] or [r["wall_s"] for r in records.values()]
    return statistics.median(walls) / 60 if walls else None


def commit_file(path: Path, message: str, attempts: int = 5) -> bool:
    """Commit ``path`` alone (nothing else that is staged), retrying while another git command holds the index."""
    root = Path(__file__).resolve().parents[1]
    for attempt in range(attempts):
        added = subprocess.run(["git", "add", str(path)], cwd=root, capture_output=True)
        done = added.returncode == 0 and subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", str(path)], cwd=root, capture_output=True).returncode == 0
        if done:
            return True
        time.sleep(2 + 3 * attempt)
    print(f"{path}: not committed (git add/commit failed {attempts} times); commit it by hand")
    return False
