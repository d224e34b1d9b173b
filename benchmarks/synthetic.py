"""A synthetic Location-sized tabular set for timing (never for science): 5,010 x 446 binary features, 30 classes.

Each class draws its features from its own Bernoulli profile, so ``columnfc`` learns it to high training accuracy
and generalizes imperfectly, like MemGuard's Location data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LOCATION_SHAPE = (5010, 446, 30)


def write_location_like(path: str | Path, seed: int = 0, shape: tuple[int, int, int] = LOCATION_SHAPE) -> Path:
    """Write ``x`` [n x d] in {0, 1} and ``y`` in 0..classes-1 to ``path`` (an .npz) unless it exists; ``shape``
    is (n, d, classes), Location's own by default (the scaling benchmark grows n and d)."""
    path = Path(path)
    if path.exists():
        return path
    n, d, classes = shape
    rng = np.random.default_rng(seed)
    profiles = rng.beta(0.3, 1.5, size=(classes, d))
    y = rng.integers(0, classes, n)
    x = (rng.random((n, d)) < profiles[y]).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


def membership_signal(
    n_targets: int = 2000,
    n_population: int = 600,
    shadows: int = 4,
    signal: float = 2.0,
    noise: float = 0.5,
    seed: int = 0,
):
    """Attack inputs with a known membership signal in the scaled confidence phi (two classes, label 0).

    Each sample has its own difficulty (the mean of phi when it is OUT); every model's phi adds independent noise,
    and the victim adds ``signal`` on its members (the first half of the targets). The shadows and the victim on
    its non-members and on the population are OUT models: for a non-member the victim is one more OUT model, the
    situation in which a fixed 0.5 on LiRA's Phi(z) or RMIA's score accepts about half the non-members.
    """
    from wemem.attacks.base import AttackInputs, Targets

    rng = np.random.default_rng(seed)
    n = n_targets + n_population
    difficulty = rng.normal(1.0, 2.0, n)

    def outputs(shift: np.ndarray | float = 0.0) -> np.ndarray:
        phi = difficulty + rng.normal(0.0, noise, n) + shift
        return np.stack([-np.logaddexp(0.0, -phi), -np.logaddexp(0.0, phi)], axis=1)

    is_member = np.arange(n_targets) < n_targets // 2
    victim = outputs(np.r_[signal * is_member, np.zeros(n_population)])
    targets = Targets(np.arange(n_targets), is_member)
    return AttackInputs(
        labels=np.zeros(n, dtype=int),
        victim_log_probs=victim,
        shadow_log_probs=[outputs() for _ in range(shadows)],
        victim_targets=targets,
        shadow_targets=[targets] * shadows,
        seed=seed,
        population=np.arange(n_targets, n),
    )
