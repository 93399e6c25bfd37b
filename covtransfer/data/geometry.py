"""Where an image lies in physical space, shared by every reader and writer (files and DICOM series alike)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Geometry:
    """Where an array lies in physical space: spacing (z, y, x) in mm, origin and direction in ITK (x, y, z) order."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    def to_dict(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        return cls(tuple(float(v) for v in d["spacing"]), tuple(float(v) for v in d["origin"]),
                   tuple(float(v) for v in d["direction"]))

    def matches(self, other: "Geometry", tolerance: float = 1e-3) -> bool:
        """True when spacing, origin and direction agree within a relative/absolute ``tolerance``."""
        return all(np.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in (
            (self.spacing, other.spacing), (self.origin, other.origin), (self.direction, other.direction)))

    def mismatches(self, other: "Geometry", tolerance: float = 1e-3) -> list[str]:
        """Names of the geometry fields that differ beyond ``tolerance`` (empty when they match)."""
        return [name for name in ("spacing", "origin", "direction")
                if not np.allclose(getattr(self, name), getattr(other, name), rtol=tolerance, atol=tolerance)]
