"""The command line of each study job, complete (data roots, configuration, every setting the study changes), so
that running it by hand, in another process or on another machine does exactly what the study does."""

from __future__ import annotations

from pathlib import Path

from covtransfer.config import Roots
from covtransfer.experiments.spec import StudySpec
from covtransfer.training.trainer import TrainingSettings

DEFAULT_CONFIGURATION = "3d_fullres"
DEFAULTS = TrainingSettings()


class StudyCommands:
    """Builds the argument lists of one study's jobs (``argv[0]`` is the ``covtransfer_*`` command)."""

    def __init__(self, spec: StudySpec, roots: Roots, device: str, output: Path):
        self.spec, self.device = spec, device
        self.roots = ["--raw", str(Path(roots.raw).absolute()), "--preprocessed",
                      str(Path(roots.preprocessed).absolute()), "--results", str(Path(roots.results).absolute())]
        self.output = str(Path(output).absolute())

    def plan(self, datasets: list[str], plans_from: str | None = None) -> list[str]:
        """``covtransfer_plan_and_preprocess``: the target with the study's planning, or the sources with its plans."""
        s = self.spec
        argv = ["covtransfer_plan_and_preprocess", "-d", *datasets]
        if plans_from:
            argv += ["--plans-from", plans_from]
        else:
            argv += (["--preset", s.preset] if s.preset else []) + ["--gpu-memory-gb", str(s.gpu_memory_gb)]
        argv += ["-c", s.configuration] + (["-np", str(s.num_processes)] if s.num_processes else [])
        return argv + ["--fingerprint-voxels", str(s.fingerprint_voxels)] + self.roots

    def train(self, datasets: list[str], strategy: str, fold: str, settings: TrainingSettings,
              pretrained: Path | None = None, tag: str | None = None) -> list[str]:
        """``covtransfer_train`` of one fold with the given settings."""
        argv = ["covtransfer_train", "-d", *datasets, "-t", strategy, "-f", str(fold)]
        if self.spec.configuration != DEFAULT_CONFIGURATION:
            argv += ["-c", self.spec.configuration]
        argv += ["--pretrained", str(Path(pretrained).absolute())] if pretrained else []
        argv += ["--tag", tag] if tag else []
        argv += ["--epochs", str(settings.epochs), "--iters-per-epoch", str(settings.iters_per_epoch),
                 "--val-iters", str(settings.val_iters), "--device", settings.device, "--seed", str(settings.seed),
                 "--amp", settings.amp]
        if settings.source_weights:
            argv += ["--source-weights", *map(str, settings.source_weights)]
        if settings.lr != DEFAULTS.lr:
            argv += ["--lr", str(settings.lr)]
        if settings.save_every != DEFAULTS.save_every:
            argv += ["--save-every", str(settings.save_every)]
        if settings.num_workers is not None:
            argv += ["--num-workers", str(settings.num_workers)]
        argv += (["--compile"] if settings.compile else []) + ([] if settings.final_validation
                                                                 else ["--no-final-validation"])
        return argv + self.roots

    def study_job(self, name: str) -> list[str]:
        """``covtransfer_study --job NAME``: one predict or aggregate job of the study recorded in the folder."""
        return ["covtransfer_study", "--job", name, "-o", self.output, "--device", self.device] + \
            self.roots
