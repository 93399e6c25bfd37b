"""Each CPU inference lever alone, timed per window in one process: interleaved rounds, the median of 3.

Levers: windows per forward (1, 2, 4), one intra-op thread instead of all, channels_last_3d, torch.compile
(inductor), ONNX Runtime and OpenVINO on the same exported network. Ratios are against the plain forward (one window,
default threads) of the same round, so machine load shared by all levers largely cancels. Runtimes that are not
installed are skipped. Run through ``benchmarks/predict.py --levers WINDOWS``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from covtransfer.inference.cpu_runtime import OpenVinoForward, export_onnx
from covtransfer.network.build import build_network
from covtransfer.plans import Plans


def _plain(network: torch.nn.Module, windows: torch.Tensor, count: int, batch: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(0, count, batch):
            network(windows[:batch])
    return run


def _one_thread(run: Callable[[], None]) -> Callable[[], None]:
    def wrapped() -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run()
        finally:
            torch.set_num_threads(threads)
    return wrapped


def _onnxruntime(path: Path, windows: torch.Tensor, count: int) -> Callable[[], None] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    window = windows[:1].numpy()
    return lambda: [session.run(None, {"windows": window}) for _ in range(count)]


def levers(plans: Plans, count: int, folder: Path) -> dict[str, Callable[[], None]]:
    """The lever functions, each forwarding ``count`` windows (a multiple of 4, so that every batch size divides it) of
    the plans' patch through a seeded random network."""
    torch.manual_seed(0)
    configuration = plans.configuration("3d_fullres")
    network = build_network(configuration, 1, {"bench": 2}, deep_supervision=False).eval()
    patch = configuration.patch_size
    windows = torch.randn(4, 1, *patch)
    runs = {f"windows per forward {b}": _plain(network, windows, count, b) for b in (1, 2, 4)}
    runs["intra-op threads 1"] = _one_thread(_plain(network, windows, count, 1))
    last = build_network(configuration, 1, {"bench": 2}, deep_supervision=False).eval()
    last.load_state_dict(network.state_dict())
    runs["channels_last_3d"] = _plain(last.to(memory_format=torch.channels_last_3d),
                                      windows.contiguous(memory_format=torch.channels_last_3d), count, 1)
    runs["torch.compile (inductor)"] = _plain(torch.compile(network), windows, count, 1)
    onnx_runtime = _onnxruntime(export_onnx(network, None, patch, 1, folder), windows, count)
    if onnx_runtime is not None:
        runs["onnxruntime"] = onnx_runtime
    try:
        openvino = OpenVinoForward(network, None, patch, 1)
        runs["openvino"] = lambda: [openvino(windows[:1]) for _ in range(count)]
    except ImportError:
        pass
    return runs


@torch.no_grad()
def time_levers(plans: Plans, count: int, rounds: int = 3) -> dict:
    """Median seconds per window of each lever and its ratio to the plain forward, with the load average."""
    count = -(-count // 4) * 4
    with tempfile.TemporaryDirectory() as folder:
        runs = levers(plans, count, Path(folder))
        start = time.perf_counter()
        for run in runs.values():
            run()  # warm-up; torch.compile compiles here
        warm_up = time.perf_counter() - start
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append((time.perf_counter() - start) / count)
    base = statistics.median(seconds["windows per forward 1"])
    table = {name: {"seconds_per_window": round(statistics.median(v), 3),
                    "ratio": round(statistics.median(v) / base, 2)} for name, v in seconds.items()}
    return {"windows": count, "warm_up_seconds": round(warm_up, 1), "load_average": os.getloadavg(), "levers": table}
