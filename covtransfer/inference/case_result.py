"""What prediction hands to each writer of a case: the result on the input grid, and the writer's signature."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from covtransfer.inference.inputs import InputCase


@dataclass
class CaseResult:
    """A predicted case on the input grid: the label map, optionally probabilities, and the preprocessing record."""

    segmentation: np.ndarray
    probabilities: np.ndarray | None
    properties: dict


# writes one more output of a predicted case (a DICOM SEG, an overlay) into the output folder
CaseWriter = Callable[[CaseResult, Path, InputCase], None]
