"""The network kinds a checkpoint may name, and their classes: below both the builder and the checkpoint type, so
each can check a kind without importing the other."""

from __future__ import annotations

from covtransfer.errors import CovtransferError
from covtransfer.network.hybrid import HybridUNet
from covtransfer.network.unet import SegmentationNetwork, UNet

NETWORKS: dict[str, type[SegmentationNetwork]] = {"unet": UNet, "hybrid": HybridUNet}


def network_class(kind: str) -> type[SegmentationNetwork]:
    """The network class of a kind (``unet`` or ``hybrid``)."""
    if kind not in NETWORKS:
        raise CovtransferError(f"unknown network kind {kind!r} (known: {', '.join(NETWORKS)})")
    return NETWORKS[kind]
