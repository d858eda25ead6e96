"""The 8 elements of the dihedral group D4, on image-like tensors.

Element o = 4·f + k: flip left-right if f, then rotate by k quarter turns counter-clockwise.
o = 0 is the identity. Compression transforms tiles by o before encoding (orientation o of a
store); training applies the same o to a grid's (y, x) axes so that cells line up.
"""

from __future__ import annotations

import numpy as np
import torch

ORIENTATIONS = 8


def dihedral(x, o: int, dims: tuple[int, int]):
    """Element ``o`` applied to the two axes ``dims`` (rows, columns) of a tensor or array."""
    flip, turns = divmod(o, 4)
    if isinstance(x, torch.Tensor):
        if flip:
            x = torch.flip(x, dims=(dims[1],))
        # torch.rot90 copies even for no turn; orientation 0 is what compression encodes most.
        return torch.rot90(x, turns, dims=dims) if turns else x
    if flip:
        x = np.flip(x, axis=dims[1])
    return np.rot90(x, turns, axes=dims)


def inverse(o: int) -> int:
    """The element that undoes ``o``: quarter turns go back, a flip then k turns is its own inverse.

    >>> [inverse(o) for o in range(8)]
    [0, 3, 2, 1, 4, 5, 6, 7]
    """
    return o if o >= 4 else -o % 4
