"""A synthetic Location-sized tabular set for timing (never for science): 5,010 x 446 binary features, 30 classes.

Each class draws its features from its own Bernoulli profile, so ``columnfc`` learns it to high training accuracy
and generalizes imperfectly, like MemGuard's Location data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LOCATION_SHAPE = (5010, 446, 30)


def write_location_like(path: str | Path, seed: int = 0) -> Path:
    """Write ``x`` [5010 x 446] in {0, 1} and ``y`` in 0..29 to ``path`` (an .npz) unless it exists."""
    path = Path(path)
    if path.exists():
        return path
    n, d, classes = LOCATION_SHAPE
    rng = np.random.default_rng(seed)
    profiles = rng.beta(0.3, 1.5, size=(classes, d))
    y = rng.integers(0, classes, n)
    x = (rng.random((n, d)) < profiles[y]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path
