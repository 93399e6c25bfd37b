"""Fast random access to preprocessed cases during training.

Preprocessing stores each case compressed (``<case>.npz`` + ``<case>.json``). Training cuts many small patches, so
each case is unpacked once into plain ``.npy`` files beside it (atomically) and read through memory maps: only the
patch region is touched, and background workers share the pages.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from covtransfer.atomic import atomic_path
from covtransfer.errors import CovtransferError


class CaseStore:
    """Memory-mapped preprocessed cases of one configuration folder, with their properties."""

    def __init__(self, folder: Path, case_ids: list[str]):
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        self.properties: dict[str, dict] = {}
        for case_id in self.case_ids:
            self._unpack(case_id)
            self.properties[case_id] = json.loads((self.folder / f"{case_id}.json").read_text())
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _unpack(self, case_id: str) -> None:
        npz = self.folder / f"{case_id}.npz"
        targets = {"data": self.folder / f"{case_id}.npy", "seg": self.folder / f"{case_id}_seg.npy"}
        if all(p.is_file() for p in targets.values()):
            return
        if not npz.is_file() or not (self.folder / f"{case_id}.json").is_file():
            raise CovtransferError(f"{npz}: preprocessed case missing (run covtransfer_plan_and_preprocess)")
        try:
            with np.load(npz) as archive:
                for key, path in targets.items():
                    with atomic_path(path) as tmp:
                        with open(tmp, "wb") as handle:
                            np.save(handle, archive[key])
        except (OSError, ValueError, KeyError) as exc:
            raise CovtransferError(f"{npz}: unreadable preprocessed case ({exc})") from None

    def arrays(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``data`` (C, Z, Y, X) float32 and ``seg`` (1, Z, Y, X) int8, memory-mapped read-only."""
        if case_id not in self._arrays:
            self._arrays[case_id] = (np.load(self.folder / f"{case_id}.npy", mmap_mode="r"),
                                     np.load(self.folder / f"{case_id}_seg.npy", mmap_mode="r"))
        return self._arrays[case_id]

    def class_locations(self, case_id: str) -> dict[int, np.ndarray]:
        """Stored foreground voxel coordinates per label (labels without voxels left out)."""
        locations = self.properties[case_id].get("class_locations", {})
        return {int(k): np.asarray(v, dtype=np.int64).reshape(-1, 3) for k, v in locations.items() if len(v)}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state
