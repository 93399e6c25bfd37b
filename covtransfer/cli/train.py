"""``covtransfer_train``: train one fold with a strategy (scratch, pretrain, continual, finetune, encoder, hybrid)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import (add_device_argument, add_root_arguments, help_description, roots_from_args,
                                    run_cli)
from covtransfer.devices import resolve_device
from covtransfer.training.api import train
from covtransfer.training.strategies import STRATEGY_NAMES, make_strategy
from covtransfer.network.regional_compile import COMPILE_SCOPES
from covtransfer.network.unet import FOREGROUND_PRIOR, HEAD_INITS
from covtransfer.training.trainer import AMP_MODES, TrainingSettings


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainingSettings()
    p = argparse.ArgumentParser(prog="covtransfer_train", description=help_description(__doc__),
                                epilog="Multi-GPU: torchrun --nproc_per_node N -m covtransfer.cli.train ...")
    p.add_argument("-d", "--dataset", nargs="+", required=True,
                   help="dataset id(s) or name(s); several only with -t pretrain (multi-lesion pre-training)")
    p.add_argument("-t", "--strategy", choices=STRATEGY_NAMES, default="scratch", help="training strategy")
    p.add_argument("-f", "--fold", default="0", help="fold index from splits.json, or 'all' (default 0)")
    p.add_argument("-c", "--configuration", default="3d_fullres", help="plans configuration (default 3d_fullres)")
    p.add_argument("--pretrained", help="transfer strategies: the pre-trained model, a checkpoint file, a run folder, "
                                        "or a model package (a .zip or an installed model's name)")
    p.add_argument("--freeze", help="finetune: 'encoder' (default) or 'encoder:K' (first K stages); "
                                    "hybrid: 'adapted' freezes the adapted encoder")
    p.add_argument("--adapted-lr-scale", type=float, default=0.1,
                   help="hybrid: learning-rate multiplier of the adapted encoder (default 0.1)")
    p.add_argument("--source-weights", type=float, nargs="+",
                   help="pretrain: sampling weight per dataset (default: equal)")
    p.add_argument("--tag", help="suffix of the results folder (<strategy>__<tag>), e.g. to keep runs from "
                                 "different pre-trained models apart")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help=f"(default {defaults.epochs})")
    p.add_argument("--iters-per-epoch", type=int, default=defaults.iters_per_epoch,
                   help=f"(default {defaults.iters_per_epoch})")
    p.add_argument("--val-iters", type=int, default=defaults.val_iters, help=f"(default {defaults.val_iters})")
    p.add_argument("--lr", type=float, default=defaults.lr, help=f"initial learning rate (default {defaults.lr})")
    add_device_argument(p)
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--compile-scope", choices=COMPILE_SCOPES, default=defaults.compile_scope,
                   help="with --compile: the whole network (default) or each repeated block in place (blocks: "
                        "conv-norm-activation blocks and fusion units; compiles far faster for the hybrid)")
    p.add_argument("--amp", choices=AMP_MODES, default="auto",
                   help="mixed precision: auto = on GPUs only (bf16, or fp16 with loss scaling); on = also on the CPU "
                        "(bf16; only faster on CPUs with native bf16, over 10x slower on AVX2-only ones); off = fp32; bf16 or "
                        "fp16 name the format (fp16 with loss scaling, nnU-Net's choice, CUDA only)")
    p.add_argument("--head-init", choices=HEAD_INITS, default=defaults.head_init,
                   help="initial bias of the segmentation heads: prior = every foreground class starts at "
                        f"probability {FOREGROUND_PRIOR}; zero = every class at 1/K, as nnU-Net (default "
                        f"{defaults.head_init}; see documentation/training.md). Pre-trained heads are loaded over it")
    p.add_argument("--save-every", type=int, default=defaults.save_every,
                   help=f"write checkpoint_latest.pt every N epochs (default {defaults.save_every})")
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"(default {defaults.seed})")
    p.add_argument("--num-workers", type=int, help="background patch-sampling workers "
                                                    "(default: 0 on CPU, up to 8 on GPU)")
    p.add_argument("--no-final-validation", action="store_true",
                   help="skip the sliding-window prediction of the fold's validation cases")
    p.add_argument("--val-mirroring", choices=("auto", "on", "off"), default=defaults.validation_tta,
                   help="mirroring (8 passes per window) in final validation: auto = on GPUs only, since on a CPU "
                        "it makes final validation about 8x slower (default auto)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="resume from the fold folder's newest checkpoint")
    p.add_argument("--resume-from", metavar="CHECKPOINT",
                   help="resume from this checkpoint file (implies --continue), e.g. the checkpoint_previous.pt "
                        "offered when checkpoint_latest.pt is damaged; unreadable checkpoints of the folder are "
                        "renamed to <name>.corrupt")
    add_root_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    strategy = make_strategy(args.strategy, args.freeze, args.adapted_lr_scale)
    settings = TrainingSettings(epochs=args.epochs, iters_per_epoch=args.iters_per_epoch, val_iters=args.val_iters,
                                lr=args.lr, device=str(device), compile=args.compile,
                                compile_scope=args.compile_scope, amp=args.amp,
                                save_every=args.save_every, seed=args.seed, num_workers=args.num_workers,
                                source_weights=args.source_weights, final_validation=not args.no_final_validation,
                                validation_tta=args.val_mirroring, head_init=args.head_init)
    folder = train(args.dataset, strategy, args.fold, roots_from_args(args), settings, args.configuration,
                   args.pretrained, args.resume, args.tag, args.resume_from)
    print(f"done: {folder}")
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
