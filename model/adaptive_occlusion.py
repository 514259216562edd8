"""``WHY_MODE=adaptive``: an approximate fine map by coarse-to-fine drill-down (after Krypton's adaptive
drill-down, Nakandala et al., SIGMOD 2019). Off unless asked for: the default, ``exact``, computes every position.

The fine grid's positions on every other row and column are computed exactly (about a quarter of them); where
any of the four around a cell drops by at least :data:`DRILL_SHARE` of the largest drop seen, the positions in
between are computed exactly too; everywhere else they are filled by bilinear interpolation of their computed
neighbours. So the important region is exact and the flat rest is smooth. Its quality against the exact map
(correlation, the argmax cell, SSIM) and the share of positions computed: bench/bench_adaptive.py.

Any grid function works: ``probabilities_at(corners) -> N x classes`` for a list of (top, left) corners.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

DRILL_SHARE = 0.25


def adaptive_probability_grid(probabilities_at: Callable[[list[tuple[int, int]]], np.ndarray], starts: list[int],
                              clean: np.ndarray, target: int, drill_share: float = DRILL_SHARE) -> tuple[np.ndarray, np.ndarray]:
    """(classes x G x G probabilities, G x G bool: computed exactly) on the grid ``starts`` x ``starts``."""
    count = len(starts)
    sparse = list(range(0, count, 2))
    if sparse[-1] != count - 1:
        sparse.append(count - 1)  # the last row and column are always computed: no extrapolation
    computed = np.zeros((count, count), dtype=bool)
    grid: np.ndarray | None = None

    def compute(cells: list[tuple[int, int]]) -> None:
        nonlocal grid
        if not cells:
            return
        probs = probabilities_at([(starts[r], starts[c]) for r, c in cells])
        if grid is None:
            grid = np.zeros((probs.shape[1], count, count), dtype=np.float32)
        for (r, c), row in zip(cells, probs):
            grid[:, r, c] = row
            computed[r, c] = True

    compute([(r, c) for r in sparse for c in sparse])
    drop = clean[target] - grid[target]
    largest = float(np.abs(drop[computed]).max()) or 1.0
    wanted = []
    for i in range(len(sparse) - 1):
        for j in range(len(sparse) - 1):
            r0, r1, c0, c1 = sparse[i], sparse[i + 1], sparse[j], sparse[j + 1]
            corners = drop[[r0, r0, r1, r1], [c0, c1, c0, c1]]
            if float(np.abs(corners).max()) >= drill_share * largest:
                wanted += [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1) if not computed[r, c]]
    compute(sorted(set(wanted)))
    _interpolate(grid, computed, sparse)
    return grid, computed


def _interpolate(grid: np.ndarray, computed: np.ndarray, sparse: list[int]) -> None:
    """Fill each position not computed from the sparse lattice around it, bilinearly (in place)."""
    count = computed.shape[0]
    lattice = np.array(sparse)
    for r in range(count):
        for c in range(count):
            if computed[r, c]:
                continue
            i = min(np.searchsorted(lattice, r, side="right") - 1, len(lattice) - 2)
            j = min(np.searchsorted(lattice, c, side="right") - 1, len(lattice) - 2)
            r0, r1, c0, c1 = lattice[i], lattice[i + 1], lattice[j], lattice[j + 1]
            u, v = (r - r0) / (r1 - r0), (c - c0) / (c1 - c0)
            grid[:, r, c] = ((1 - u) * (1 - v) * grid[:, r0, c0] + (1 - u) * v * grid[:, r0, c1]
                             + u * (1 - v) * grid[:, r1, c0] + u * v * grid[:, r1, c1])


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The global structural similarity of two maps (one window over the whole map; constants as in Wang et
    al. 2004 for the dynamic range of ``a``)."""
    span = float(np.ptp(a)) or 1.0
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    ma, mb = float(a.mean()), float(b.mean())
    va, vb = float(a.var()), float(b.var())
    cov = float(((a - ma) * (b - mb)).mean())
    return (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
