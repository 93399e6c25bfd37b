"""``covtransfer_install_model``: install a model package under <results>/models/<name>/ (every checksum verified),
or list the installed models."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from covtransfer.cli.common import add_root_arguments, roots_from_args, run_cli
from covtransfer.errors import CovtransferError
from covtransfer.models.install import install_model, list_models


def _labels(labels: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in labels.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="covtransfer_install_model",
                                description="Install a model package under <results>/models/<name>/ (every "
                                            "checksum verified, nothing half-installed), or list the installed "
                                            "models (--list); see documentation/models.md.")
    p.add_argument("package", nargs="?", help="the model package, <name>.zip")
    p.add_argument("--name", help="install under this name (default: the name in the package)")
    p.add_argument("--overwrite", action="store_true", help="replace an installed model of the same name")
    p.add_argument("--list", action="store_true", help="list the installed models with labels, licence and origin")
    add_root_arguments(p)
    return p


def _print_list(results) -> None:
    models = list_models(results)
    if not models:
        print(f"no models installed in {results}/models")
    for model in models:
        origin = f"; pre-trained from {model['pretrained_from']}" if model["pretrained_from"] else ""
        print(f"{model['name']}: {model['strategy']}, folds {', '.join(model['folds'])}; labels "
              f"{_labels(model['labels'])}; licence {model['licence']}; trained on {', '.join(model['datasets'])}"
              f"{origin}; from {model['package']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results = roots_from_args(args).results
    if args.list:
        if args.package:
            raise CovtransferError("give either a package to install or --list, not both")
        _print_list(results)
        return 0
    if not args.package:
        raise CovtransferError("name the package to install (covtransfer_install_model model.zip), or pass --list")
    folder, manifest = install_model(args.package, results, args.name, args.overwrite)
    print(f"installed {folder.name} into {folder} ({manifest['strategy'].get('name')}, folds "
          f"{', '.join(manifest['folds'])}; labels {_labels(manifest['labels'])})")
    print(f"licence: {manifest['licence']} (terms and what they mean for derived models: {folder / 'LICENSE'})")
    print("cite: " + (folder / "CITATION").read_text().strip())
    return 0


def entry() -> None:
    sys.exit(run_cli(main))


if __name__ == "__main__":
    entry()
