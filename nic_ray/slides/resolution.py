"""Choosing the pyramid level that serves a target resolution in µm/px."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LevelChoice:
    """Read ``level`` and shrink it by ``scale`` (source pixels per target pixel, ≥ 1)."""

    level: int
    scale: float
    mpp: float  # the resolution actually delivered


def choose_level(level_mpps: list[float], target_mpp: float, tolerance: float = 0.1) -> LevelChoice:
    """Pick the level within ``tolerance`` of ``target_mpp``, else the nearest finer level.

    A level close enough is read as it is (no resampling: 0.499 µm/px serves 0.5). Otherwise the
    coarsest level finer than the target is read and downsampled. A target finer than every
    level is refused: upsampled pixels would claim detail the scanner never captured.

    >>> choose_level([0.25, 1.0, 4.0], 0.5)
    LevelChoice(level=0, scale=2.0, mpp=0.5)
    >>> choose_level([0.249, 0.498, 1.992], 0.5)
    LevelChoice(level=1, scale=1.0, mpp=0.498)
    """
    close = [i for i, m in enumerate(level_mpps) if abs(m / target_mpp - 1) <= tolerance]
    if close:
        best = min(close, key=lambda i: abs(level_mpps[i] - target_mpp))
        return LevelChoice(best, 1.0, level_mpps[best])
    finer = [i for i, m in enumerate(level_mpps) if m < target_mpp]
    if not finer:
        raise ValueError(
            f"the finest level is {min(level_mpps):.4g} µm/px, coarser than the target "
            f"{target_mpp:.4g} µm/px; choose a coarser --mpp"
        )
    best = max(finer, key=lambda i: level_mpps[i])
    return LevelChoice(best, target_mpp / level_mpps[best], target_mpp)
