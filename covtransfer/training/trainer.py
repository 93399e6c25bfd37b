"""The training loop shared by every strategy: SGD with poly decay, Dice + CE with deep supervision, on-device
augmentation, online validation with a moving-average pseudo Dice, atomic checkpoints and exact resumption.

A :class:`Strategy` decides what is loaded, frozen and scaled; the trainer never branches on the strategy's name.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from covtransfer.atomic import write_json
from covtransfer.errors import CovtransferError
from covtransfer.devices import resolve_device
from covtransfer.network.build import build_network, network_spec, unwrap_network
from covtransfer.network.checkpoint import Checkpoint
from covtransfer.network.checkpoint_io import load_checkpoint, save_checkpoint
from covtransfer.network.regional_compile import COMPILE_SCOPES, compile_blocks
from covtransfer.plans import Plans
from covtransfer.training import distributed
from covtransfer.training.augment.deep_supervision import deep_supervision_scales, downsample_seg_for_ds
from covtransfer.training.augment.pipeline import build_training_pipeline
from covtransfer.training.batch_stream import BatchStream, batch_loader, seed_for
from covtransfer.training.case_store import CaseStore
from covtransfer.training.checkpoint import (LATEST, PREVIOUS, newest_checkpoint, remove_checkpoint_leftovers,
                                            set_aside_damaged)
from covtransfer.training.loss import DeepSupervisionLoss, DiceCELoss, deep_supervision_weights, tp_fp_fn
from covtransfer.training.run_log import RunLog
from covtransfer.training.progress import TrainingProgress
from covtransfer.training.sampler import PatchSampler
from covtransfer.training.settings import AMP_MODES, TrainingSettings
from covtransfer.training.strategies import Strategy

EMA_DECAY = 0.9
PLOT_INTERVAL_S = 30.0  # progress.png is redrawn at most this often (and after the last epoch): drawing takes ~0.2 s


@dataclass
class TrainingTask:
    """One dataset the run learns from: its head name, preprocessed data, plans and fold cases."""

    name: str
    preprocessed_folder: Path
    plans: Plans
    train_ids: list[str]
    val_ids: list[str]

    @property
    def num_classes(self) -> int:
        return max(self.plans.labels.values()) + 1


def moving_average(previous: float | None, value: float) -> float | None:
    """nnU-Net's EMA of the pseudo Dice (``0.9 × previous + 0.1 × value``); a NaN (nothing to score) is skipped."""
    if value is None or math.isnan(value):
        return previous
    return value if previous is None or math.isnan(previous) else EMA_DECAY * previous + (1 - EMA_DECAY) * value


def poly_lr(base_lr: float, epoch: int, epochs: int, exponent: float) -> float:
    """Polynomial decay: ``base_lr × (1 − epoch / epochs) ^ exponent``."""
    return base_lr * (1 - epoch / epochs) ** exponent


@dataclass
class _State:
    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    ema: float | None = None
    best_ema: float = -1.0


class Trainer:
    """Runs one fold of one strategy on one or more tasks and writes the fold folder."""

    def __init__(self, tasks: list[TrainingTask], configuration_name: str, strategy: Strategy,
                 output_folder: Path, settings: TrainingSettings, pretrained: Checkpoint | None = None,
                 pretrained_source: str = ""):
        if not tasks:
            raise CovtransferError("nothing to train: no datasets given")
        self.tasks = tasks
        self.plans = tasks[0].plans
        self.configuration_name = configuration_name
        self.configuration = self.plans.configuration(configuration_name)
        self.strategy = strategy
        self.output_folder = Path(output_folder)
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.context = distributed.init_distributed(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
            torch.backends.cudnn.benchmark = True  # patch shapes are fixed: cuDNN picks its fastest kernels once
        torch.manual_seed(settings.seed)
        heads = {task.name: task.num_classes for task in tasks}
        self.spec = network_spec(self.configuration, self.plans.num_input_channels, heads, strategy.network_kind)
        self.network = build_network(self.configuration, self.plans.num_input_channels, heads,
                                     kind=strategy.network_kind, deep_supervision=True)
        self.network.heads.init_bias(settings.head_init)  # before the strategy loads any pre-trained heads
        self.load_report = strategy.initialise(self.network, pretrained, pretrained_source)
        groups = strategy.parameter_groups(self.network)
        # oneDNN's 3D convolutions run about a fifth faster on channels-last tensors on a CPU
        self.memory_format = torch.channels_last_3d if self.device.type == "cpu" else torch.contiguous_format
        self.network.to(self.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=True,
                                         weight_decay=settings.weight_decay)
        self.amp_dtype = self._amp_dtype()
        self.validation_mirroring = self._validation_mirroring()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        n_outputs = self.configuration.n_stages - 1
        self.loss = DeepSupervisionLoss(DiceCELoss(batch_dice=self.configuration.batch_dice),
                                        deep_supervision_weights(n_outputs))
        self.ds_scales = deep_supervision_scales(self.configuration.strides)
        self.model: nn.Module = self._wrap(self.network)
        self.state = _State()
        self.log = RunLog(self.output_folder) if self.context.is_main else None
        self._last_plot = -math.inf

    def _amp_dtype(self) -> torch.dtype | None:
        """Mixed precision: on GPUs by default (bf16 where supported), on CPUs only when asked (bf16); ``bf16`` and
        ``fp16`` name the format (fp16, nnU-Net's, with loss scaling, needs a CUDA device)."""
        amp = self.settings.amp
        if amp not in AMP_MODES:
            raise CovtransferError(f"--amp {amp!r}: use {', '.join(AMP_MODES)}")
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if amp == "fp16":
            if self.device.type != "cuda":
                raise CovtransferError("--amp fp16: fp16 with loss scaling needs a CUDA device; use bf16 or off")
            return torch.float16
        if amp != "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16

    def _validation_mirroring(self) -> bool:
        """Mirroring in final validation: 8 passes per window, affordable on GPUs; by default off on CPUs."""
        mode = self.settings.validation_tta
        if mode not in ("auto", "on", "off"):
            raise CovtransferError(f"--val-mirroring {mode!r}: use auto, on or off")
        return mode == "on" or (mode == "auto" and self.device.type == "cuda")

    def _wrap(self, network: nn.Module) -> nn.Module:
        if self.settings.compile_scope not in COMPILE_SCOPES:
            raise CovtransferError(f"--compile-scope {self.settings.compile_scope!r}: use "
                                   f"{' or '.join(COMPILE_SCOPES)}")
        model = network
        if self.context.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # other tasks' heads and the zero-weight lowest deep-supervision output get no gradient in a step
            unused = len(self.tasks) > 1 or 0.0 in self.loss.weights
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
        if self.settings.compile and self.settings.compile_scope == "blocks":
            compile_blocks(network)  # in place: DDP, the optimiser and checkpoints keep the same modules
        elif self.settings.compile:
            model = torch.compile(model)
        return model

    def log_line(self, message: str) -> None:
        """Print and record a line (main process only)."""
        if self.log is not None:
            self.log.line(message)

    # ----------------------------------------------------------------------------------------- checkpoints
    def checkpoint(self) -> Checkpoint:
        """Everything needed to predict with this model and to resume this run exactly."""
        return Checkpoint(
            kind=self.strategy.network_kind, heads=dict(self.spec["heads"]), plans=self.plans,
            configuration_name=self.configuration_name, state_dict=unwrap_network(self.model).state_dict(),
            labels={t.name: dict(t.plans.labels) for t in self.tasks}, predict_head=self.tasks[0].name,
            mirror_axes=(0, 1, 2), strategy=self.strategy.describe(), settings=asdict(self.settings),
            epoch=self.state.epoch, history=self.state.history, ema=self.state.ema, best_ema=self.state.best_ema,
            optimizer=self.optimizer.state_dict(), grad_scaler=self.scaler.state_dict(),
            rng={"torch": torch.get_rng_state(), "seed": self.settings.seed})

    def _save(self, name: str) -> None:
        """Write a checkpoint (main process); the latest one keeps its predecessor as ``checkpoint_previous.pt``."""
        if self.context.is_main:
            previous = self.output_folder / PREVIOUS if name == LATEST else None
            save_checkpoint(self.output_folder / name, self.checkpoint(), previous)
        distributed.barrier(self.context)

    def _resume_path(self, source: Path | None) -> Path:
        """``source``, with the folder's unreadable checkpoints set aside; else the folder's newest checkpoint."""
        if source is not None:
            if self.context.is_main and self.output_folder.is_dir():
                for moved in set_aside_damaged(self.output_folder):
                    self.log_line(f"set aside an unreadable checkpoint as {moved.name}")
            return source
        path = newest_checkpoint(self.output_folder) if self.output_folder.is_dir() else None
        if path is None:
            raise CovtransferError(f"{self.output_folder}: nothing to continue (no checkpoint); "
                                   "start the run without --continue")
        return path

    def resume(self, source: Path | None = None) -> None:
        """Restore a checkpoint (optimizer, scaler, epoch, RNG, history): ``source`` (``--resume-from``) or the
        fold folder's newest, refused in one line when one of the folder's checkpoints is damaged."""
        path = self._resume_path(source)
        checkpoint = load_checkpoint(path)
        if checkpoint.network_spec != self.spec:
            raise CovtransferError(f"{path}: was trained with another network or plans; cannot continue it here")
        if checkpoint.optimizer is None or checkpoint.grad_scaler is None or checkpoint.rng is None:
            raise CovtransferError(f"{path}: holds no training state (optimizer, scaler, RNG); cannot continue it")
        unwrap_network(self.model).load_state_dict(checkpoint.state_dict)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scaler.load_state_dict(checkpoint.grad_scaler)
        torch.set_rng_state(checkpoint.rng["torch"])
        self.state = _State(checkpoint.epoch, list(checkpoint.history), checkpoint.ema, checkpoint.best_ema)
        if self.log is not None:
            self.log.write_history(self.state.history)
        self.log_line(f"resumed from {path.name if source is None else path} after epoch {self.state.epoch}")

    # ----------------------------------------------------------------------------------------- data
    def _streams(self) -> tuple[BatchStream, BatchStream]:
        final = self.configuration.patch_size
        self.augment = build_training_pipeline(final, mirror_axes=(0, 1, 2))
        initial = self.augment.initial_patch_size
        batch, oversample = distributed.local_batch(self.configuration.batch_size,
                                                    self.settings.oversample_foreground, self.context)
        train, val = [], []
        for task in self.tasks:
            folder = task.preprocessed_folder / self.configuration.data_identifier
            store = CaseStore(folder, sorted(set(task.train_ids) | set(task.val_ids)))
            train.append(PatchSampler(store, task.train_ids, initial, final, batch, oversample))
            val.append(PatchSampler(store, task.val_ids, final, final, batch, oversample))
        weights = self.settings.source_weights or [1.0] * len(self.tasks)
        if len(weights) != len(self.tasks):
            raise CovtransferError(f"--source-weights has {len(weights)} values for {len(self.tasks)} datasets")
        seed, rank = self.settings.seed, self.context.rank
        return BatchStream(train, weights, seed, 0, rank), BatchStream(val, weights, seed, 1, rank)

    def _batches(self) -> tuple[Iterator[dict], Iterator[dict] | None]:
        """Training and validation batches from the current epoch to the last (no validation when ``val_iters`` 0)."""
        s = self.settings
        train_stream, val_stream = self._streams()
        workers, pin = self._num_workers(), self.device.type == "cuda"
        train = iter(batch_loader(train_stream, self.state.epoch * s.iters_per_epoch, s.epochs * s.iters_per_epoch,
                                  workers, pin))
        val = iter(batch_loader(val_stream, self.state.epoch * s.val_iters, s.epochs * s.val_iters,
                                workers, pin)) if s.val_iters > 0 else None
        return train, val

    def _num_workers(self) -> int:
        if self.settings.num_workers is not None:
            return self.settings.num_workers
        return min(8, max(1, (torch.get_num_threads() or 1) // 2)) if self.device.type == "cuda" else 0

    def _to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, str]:
        images = batch["images"].to(self.device, non_blocking=True)
        seg = batch["seg"].to(self.device, non_blocking=True).long()
        return images, seg, self.tasks[int(batch["source"])].name

    def _generator(self, stream: int, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed_for(self.settings.seed, stream, index, self.context.rank, 2))

    # ----------------------------------------------------------------------------------------- steps
    def train_step(self, images: torch.Tensor, seg: torch.Tensor, task: str) -> float:
        """One optimiser step on an augmented batch; returns the loss."""
        targets = downsample_seg_for_ds(seg, self.ds_scales)
        images = images.contiguous(memory_format=self.memory_format)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.model(images, task=task)
            loss = self.loss(outputs, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.settings.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    @torch.no_grad()
    def validation_step(self, images: torch.Tensor, seg: torch.Tensor, task: str) -> tuple[float, torch.Tensor]:
        """Loss and per-class TP/FP/FN (foreground classes) of one validation batch."""
        targets = downsample_seg_for_ds(seg, self.ds_scales)
        images = images.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            outputs = self.model(images, task=task)
            loss = self.loss(outputs, targets)
        return float(loss), torch.stack(tp_fp_fn(outputs[0].float(), targets[0]))

    # ----------------------------------------------------------------------------------------- loop
    def fit(self) -> dict:
        """Train from the current state to ``settings.epochs``; return the last epoch's record."""
        s = self.settings
        if self.context.is_main:
            self.output_folder.mkdir(parents=True, exist_ok=True)
            remove_checkpoint_leftovers(self.output_folder)
            if self.load_report is not None and self.state.epoch == 0:
                write_json(self.output_folder / "load_report.json", self.load_report.to_dict())
                self.log_line(self.load_report.summary())
        train_batches, val_batches = self._batches()
        self.log_line(f"training {self.strategy.name} on {', '.join(t.name for t in self.tasks)}: "
                  f"epochs {self.state.epoch}..{s.epochs - 1}, {s.iters_per_epoch} iterations each, "
                  f"patch {self.configuration.patch_size}, batch {self.configuration.batch_size}, "
                  f"device {self.device}, {self.context.world_size} process(es)")
        progress = TrainingProgress(self.state.epoch, s.epochs, s.iters_per_epoch, s.val_iters,
                                    self.log_line if self.log is not None else None)
        while self.state.epoch < s.epochs:
            self._run_epoch(train_batches, val_batches, progress)
        self._save("checkpoint_final.pt")
        if self.context.is_main:
            (self.output_folder / LATEST).unlink(missing_ok=True)
            (self.output_folder / PREVIOUS).unlink(missing_ok=True)
        return self.state.history[-1] if self.state.history else {}

    def _run_epoch(self, train_batches, val_batches, progress: TrainingProgress) -> None:
        s, epoch = self.settings, self.state.epoch
        start = time.perf_counter()
        lr = poly_lr(s.lr, epoch, s.epochs, s.poly_exponent)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        self.model.train()
        losses = []
        with progress.epoch(epoch) as ticker:
            for _ in range(s.iters_per_epoch):
                batch = next(train_batches)
                images, seg, task = self._to_device(batch)
                images, seg = self.augment(images, seg, self._generator(0, int(batch["index"])))
                try:
                    losses.append(self.train_step(images, seg, task))
                except FloatingPointError:
                    raise CovtransferError(
                        f"{self.output_folder}: the loss became NaN/Inf in epoch {epoch}; training stopped, the "
                        "last good checkpoint is kept (try a lower learning rate or check the data)") from None
                ticker.step()
        val_loss, val_dice, task_dice = self._validate(val_batches)
        ema = moving_average(self.state.ema, val_dice)
        previous = self.state.history[-1].get("task_ema", {}) if self.state.history else {}
        task_ema = {name: moving_average(previous.get(name), task_dice.get(name, math.nan))
                    for name in set(previous) | set(task_dice)}
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
                  "val_loss": val_loss, "val_dice": val_dice, "ema_dice": math.nan if ema is None else ema, "lr": lr,
                  "epoch_time": time.perf_counter() - start, "task_dice": task_dice, "task_ema": task_ema}
        self.state.epoch, self.state.ema = epoch + 1, ema
        self.state.history.append(record)
        self.log_line(f"epoch {epoch}: train loss {record['train_loss']:.4f}, val loss {val_loss:.4f}, "
                      f"pseudo Dice {val_dice:.4f} (EMA {record['ema_dice']:.4f}), lr {lr:.2e}, "
                      f"{record['epoch_time']:.1f} s")
        if len(self.tasks) > 1:
            self.log_line("  EMA per source: " + ", ".join(
                f"{name} {value:.4f}" for name, value in sorted(task_ema.items()) if value is not None))
        if self.log is not None:
            self.log.write_history(self.state.history)
            if epoch + 1 == s.epochs or time.perf_counter() - self._last_plot >= PLOT_INTERVAL_S:
                self.log.plot(self.state.history)
                self._last_plot = time.perf_counter()
        if ema is not None and ema > self.state.best_ema:
            self.state.best_ema = ema
            self._save("checkpoint_best.pt")
        if (epoch + 1) % s.save_every == 0 and epoch + 1 < s.epochs:
            self._save(LATEST)

    def _validate(self, val_batches) -> tuple[float, float, dict[str, float]]:
        """Mean loss, the pseudo Dice (global TP/FP/FN per class, averaged over classes and tasks) and each task's."""
        if val_batches is None:
            return math.nan, math.nan, {}
        self.model.eval()
        counts: dict[str, torch.Tensor] = {}
        losses = []
        for _ in range(self.settings.val_iters):
            batch = next(val_batches)
            images, seg, task = self._to_device(batch)
            seg = torch.clamp(seg, min=0)
            loss, stats = self.validation_step(images, seg, task)
            losses.append(loss)
            counts[task] = counts[task] + stats if task in counts else stats
        dices: dict[str, float] = {}
        for task in self.tasks:
            stats = counts.get(task.name, torch.zeros(3, task.num_classes - 1, device=self.device)).double()
            stats = distributed.all_reduce_sum(stats, self.context)
            tp, fp, fn = stats
            valid = (tp + fp + fn) > 0
            if valid.any():
                dices[task.name] = float((2 * tp[valid] / (2 * tp[valid] + fp[valid] + fn[valid])).mean())
        mean = float(np.mean(list(dices.values()))) if dices else math.nan
        return float(np.mean(losses)), mean, dices

    def close(self) -> None:
        """Leave the distributed process group, if any. The DDP wrapper goes first: a reducer freed after its group
        was destroyed can hang the process at exit (seen with gloo, about one run in ten)."""
        self.model = self.network
        distributed.shutdown(self.context)
