"""The NIC synthetic task (Tellez et al., TPAMI 2019, §4.1.1), with scikit-learn's 8×8 digits
(MNIST, which the paper used, cannot be downloaded where nic-ray is built and tested).

`PaperCase` is the task as §4.1.1 defines it: digits at random positions over the whole image
at one density; two rectangles, one upright (vertical or horizontal) and one tilted by 45° or
135°, of random sizes; a digit takes the class of the rectangle it falls in, elsewhere a random
class. Nothing but the digits' classes and their arrangement marks a rectangle. The image's label
is the tilted rectangle's class; its mask is the tilted rectangle.

`nic_synthetic_case` is a simpler variant for quick tests: rectangles packed solid with digits,
of fixed size, and an optional lesion stain that even a mean-RGB encoder sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage

from nic_ray.slides.resample import box_downsample

_STAIN = np.array([80, 40, 140])  # haematoxylin-like purple: tissue to a saturation mask
DENSITY = 25_920 / 3600**2  # the paper's digits a pixel (§4.1.1)


@dataclass(frozen=True)
class SyntheticCase:
    image: np.ndarray  # (H, W, 3) uint8
    label: int  # class of the digits in the tilted rectangle
    distractor: int  # class of the digits in the upright rectangle
    mask: np.ndarray  # (H, W) bool: the tilted rectangle


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images / 16.0, d.target


def _glyph(digit: np.ndarray, px: int) -> np.ndarray:
    """An 8 × 8 digit at px × px: repeated pixels for multiples of 8, bilinear otherwise."""
    if px % 8 == 0:
        return np.kron(digit, np.ones((px // 8, px // 8)))
    return np.clip(ndimage.zoom(digit, px / 8, order=1), 0, 1)


def _draw(image: np.ndarray, digit: np.ndarray, cy: float, cx: float, px: int, stain: np.ndarray = _STAIN) -> None:
    """Darken ``image`` with ``digit`` in ``stain`` scaled to px × px, centred at (cy, cx); clipped."""
    glyph = _glyph(digit, px)
    y0, x0 = round(cy) - glyph.shape[0] // 2, round(cx) - glyph.shape[1] // 2
    gy0, gx0 = max(0, -y0), max(0, -x0)
    y0, x0 = max(y0, 0), max(x0, 0)
    y1 = min(image.shape[0], y0 + glyph.shape[0] - gy0)
    x1 = min(image.shape[1], x0 + glyph.shape[1] - gx0)
    if y1 <= y0 or x1 <= x0:  # wholly outside
        return
    g = glyph[gy0 : gy0 + y1 - y0, gx0 : gx0 + x1 - x0, None]
    ink = (255 - g * (255 - stain)).astype(np.uint8)
    np.minimum(image[y0:y1, x0:x1], ink, out=image[y0:y1, x0:x1])


@dataclass(frozen=True)
class Rectangle:
    """A rectangle centred at (cy, cx), ``long`` × ``short`` px, its long side at ``angle``
    degrees from the x axis (0 horizontal, 90 vertical, 45 and 135 tilted)."""

    cy: float
    cx: float
    long: float
    short: float
    angle: float

    def contains(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        a = np.deg2rad(self.angle)
        dy, dx = np.asarray(y, float) - self.cy, np.asarray(x, float) - self.cx
        along, across = np.cos(a) * dx - np.sin(a) * dy, np.sin(a) * dx + np.cos(a) * dy
        return (np.abs(along) <= self.long / 2) & (np.abs(across) <= self.short / 2)

    def half_extent(self) -> tuple[float, float]:
        """(half height, half width) of its bounding box."""
        a = np.deg2rad(self.angle)
        c, s = abs(np.cos(a)), abs(np.sin(a))
        return (s * self.long + c * self.short) / 2, (c * self.long + s * self.short) / 2


class PaperCase:
    """One image of the paper's synthetic task, painted on demand (a `write_slide` painter, so
    that slides larger than memory are written tile by tile).

    ``size`` px a side; digits of ``digit_px`` px at ``density`` digits a pixel (the paper:
    25,920 in 3600², 9-px digits); rectangles' long side drawn uniformly in ``long_side`` × size
    (the paper: 1%–50%), their short side a third to a half of it (at least a digit; the paper
    does not say). ``label`` fixes the tilted rectangle's class and ``distractor`` the upright
    one's (else drawn); ``same_size`` draws one size for both, so that with both classes fixed
    every image holds the same classes in the same amounts and only the arrangement tells them apart.

    >>> case = PaperCase(size=720, seed=1)
    >>> case.label != case.distractor, case.tilted.angle in (45, 135), case.upright.angle in (0, 90)
    (True, True, True)
    >>> bool((case(0, 0, 720, 720, 1) == case.image()).all())  # the same pixels, whole or by region
    True
    """

    def __init__(
        self,
        size: int = 3600,
        digit_px: int = 9,
        density: float = DENSITY,
        long_side: tuple[float, float] = (0.01, 0.5),
        seed: int = 0,
        label: int | None = None,
        distractor: int | None = None,
        same_size: bool = False,
    ):
        rng = np.random.default_rng(seed)
        self.width = self.height = size
        self.digit_px = digit_px
        self.label, self.distractor = (int(c) for c in rng.choice(10, size=2, replace=False))
        if label is not None:  # a label asked for (balanced data sets); the distractor another class
            self.label, self.distractor = label, (label + 1 + int(rng.integers(9))) % 10
        if distractor is not None:
            if distractor == self.label:
                raise ValueError(f"distractor {distractor}: must differ from the label")
            self.distractor = distractor
        self.upright, self.tilted = self._place(rng, size, long_side, digit_px, same_size)
        images, targets = _digits()
        n = rng.poisson(density * size * size)
        self.centres = rng.uniform(0, size, size=(n, 2))
        y, x = self.centres.T
        self.classes = rng.integers(10, size=n)
        self.classes[self.upright.contains(y, x)] = self.distractor
        self.classes[self.tilted.contains(y, x)] = self.label  # the label wins where they touch
        by_class = [np.flatnonzero(targets == c) for c in range(10)]
        self.samples = np.array([rng.choice(by_class[c]) for c in self.classes], int)

    @staticmethod
    def _place(
        rng: np.random.Generator, size: int, long_side: tuple[float, float], digit_px: int, same_size: bool
    ) -> tuple[Rectangle, Rectangle]:
        for _ in range(1000):
            rects = []
            for angle in (rng.choice([0, 90]), rng.choice([45, 135])):
                if not (same_size and rects):
                    long = rng.uniform(*long_side) * size
                    short = max(digit_px, long * rng.uniform(1 / 3, 1 / 2))
                hy, hx = Rectangle(0, 0, long, short, angle).half_extent()
                if hy * 2 > size or hx * 2 > size:
                    break
                rects.append(Rectangle(rng.uniform(hy, size - hy), rng.uniform(hx, size - hx), long, short, angle))
            if len(rects) == 2:
                (a, b) = rects
                ya, xa = a.half_extent()
                yb, xb = b.half_extent()
                if abs(a.cy - b.cy) > ya + yb or abs(a.cx - b.cx) > xa + xb:  # bounding boxes apart
                    return a, b
        raise ValueError(f"two rectangles of up to {long_side[1]:.0%} of {size} px do not fit apart; lower it")

    def __call__(self, x: int, y: int, width: int, height: int, downsample: int) -> np.ndarray:
        """RGB (height, width, 3) of the level shrunk by ``downsample``, from its (x, y)."""
        k, px = downsample, self.digit_px
        x0, y0, w, h = x * k, y * k, width * k, height * k
        region = np.full((h, w, 3), 255, np.uint8)
        cy, cx = self.centres.T
        near = np.flatnonzero((cy > y0 - px) & (cy < y0 + h + px) & (cx > x0 - px) & (cx < x0 + w + px))
        images, _ = _digits()
        for i in near:
            _draw(region, images[self.samples[i]], cy[i] - y0, cx[i] - x0, px)
        return region if k == 1 else box_downsample(region, k)

    def image(self) -> np.ndarray:
        return self(0, 0, self.width, self.height, 1)

    def digit_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """(n, 2) top-left (y, x) in px of the ``digit_px`` grid cells, wholly in the image, that
        hold a digit's centre, and that digit's class: what an encoder of the task's cells sees."""
        P = self.digit_px
        corners = (self.centres // P).astype(int) * P
        inside = (corners + P <= (self.height, self.width)).all(axis=1)
        return corners[inside], self.classes[inside]

    def cell_classes(self) -> np.ndarray:
        """uint8 (size // digit_px)²: 1 + the class of the digit centred in each cell, 0 for
        none; what a perfect encoder of the task's cells would read (of two digits in one cell, one)."""
        P = self.digit_px
        truth = np.zeros((self.height // P, self.width // P), np.uint8)
        corners, classes = self.digit_cells()
        truth[corners[:, 0] // P, corners[:, 1] // P] = classes + 1
        return truth

    def mask(self) -> np.ndarray:
        """bool (size, size): the tilted rectangle, the lesion to find."""
        yy, xx = np.mgrid[0 : self.height, 0 : self.width]
        return self.tilted.contains(yy + 0.5, xx + 0.5)


def nic_synthetic_case(
    size: tuple[int, int] = (2048, 2048),
    n_digits: int = 200,
    rect_size: tuple[int, int] = (320, 192),
    digit_px: int = 32,
    seed: int = 0,
    lesion_stain: tuple[int, int, int] | None = None,
) -> SyntheticCase:
    """One image of the NIC synthetic task.

    ``size`` (height, width) in pixels, ``n_digits`` scattered digits, ``rect_size`` (height,
    width) of both rectangles, ``digit_px`` the side of a digit (a multiple of 8).
    ``lesion_stain`` inks the tilted rectangle's digits in that RGB colour instead of the
    haematoxylin purple of all others, on a ground tinted with it: a colour pattern in a
    region, for encoders (mean-RGB) that cannot tell digits apart.

    >>> case = nic_synthetic_case(size=(1024, 1024), seed=3)
    >>> case.image.shape, bool(case.mask.any()), case.label != case.distractor
    ((1024, 1024, 3), True, True)
    """
    if digit_px % 8:
        raise ValueError(f"digit_px must be a multiple of 8, not {digit_px}")
    rng = np.random.default_rng(seed)
    images, targets = _digits()
    H, W = size
    rh, rw = rect_size
    label, distractor = (int(c) for c in rng.choice(10, size=2, replace=False))
    angle = np.deg2rad(rng.choice([45, 135]))
    # Half-extent of the tilted rectangle's bounding box; both boxes must fit and not overlap.
    half = (
        (abs(np.sin(angle)) * rw + abs(np.cos(angle)) * rh) / 2,
        (abs(np.cos(angle)) * rw + abs(np.sin(angle)) * rh) / 2,
    )
    boxes = [(rh / 2 + digit_px, rw / 2 + digit_px), (half[0] + digit_px, half[1] + digit_px)]
    for _ in range(1000):
        centres = [(rng.uniform(b[0], H - b[0]), rng.uniform(b[1], W - b[1])) for b in boxes]
        (ay, ax), (by, bx) = centres
        if abs(ay - by) > boxes[0][0] + boxes[1][0] or abs(ax - bx) > boxes[0][1] + boxes[1][1]:
            break
    else:
        raise ValueError(f"two rectangles of {rect_size} do not fit apart in an image of {size}")

    image = np.full((H, W, 3), 255, np.uint8)
    by_class = [np.flatnonzero(targets == c) for c in range(10)]
    # Lattice of digit centres in a rectangle's own frame, rotated into the image.
    v, u = np.meshgrid(
        np.arange(digit_px / 2 - rh / 2, rh / 2, digit_px),
        np.arange(digit_px / 2 - rw / 2, rw / 2, digit_px),
        indexing="ij",
    )
    cos, sin = np.cos(angle), np.sin(angle)
    lesion = _STAIN if lesion_stain is None else np.asarray(lesion_stain)
    for (cy, cx), cls, (c, s), stain in (
        (centres[0], distractor, (1.0, 0.0), _STAIN),
        (centres[1], label, (cos, sin), lesion),
    ):
        for dv, du in zip(v.ravel(), u.ravel()):
            _draw(image, images[rng.choice(by_class[cls])], cy + s * du + c * dv, cx + c * du - s * dv, digit_px, stain)

    placed = 0
    for _ in range(n_digits * 20):
        if placed == n_digits:
            break
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        if any(
            abs(cy - y) < b[0] + digit_px / 2 and abs(cx - x) < b[1] + digit_px / 2 for (y, x), b in zip(centres, boxes)
        ):
            continue
        _draw(image, images[rng.integers(len(images))], cy, cx, digit_px)
        placed += 1

    yy, xx = np.mgrid[0:H, 0:W]
    dy, dx = yy - centres[1][0], xx - centres[1][1]
    along, across = cos * dx + sin * dy, -sin * dx + cos * dy  # the rectangle's own axes
    mask = (np.abs(along) <= rw / 2) & (np.abs(across) <= rh / 2)
    if lesion_stain is not None:
        tint = (255 - 0.4 * (255 - lesion)).astype(np.uint8)
        image[mask] = np.minimum(image[mask], tint)
    return SyntheticCase(image, label, distractor, mask)


def digit_patches(n: int, patch_size: int = 128, digit_px: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` patches (n, P, P, 3) uint8 from inside rectangles of the task, and their digit class.

    A patch is a lattice of digits of one class (each drawn from that class's samples) at a
    random phase, as a patch cut from one of the task's rectangles: the labelled patch set of
    the paper's encoder comparison (Table 1). Classes cycle 0..9.

    >>> patches, labels = digit_patches(20, seed=1)
    >>> patches.shape, labels[:12].tolist()
    ((20, 128, 128, 3), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    """
    rng = np.random.default_rng(seed)
    images, targets = _digits()
    by_class = [np.flatnonzero(targets == c) for c in range(10)]
    labels = np.arange(n) % 10
    patches = np.full((n, patch_size, patch_size, 3), 255, np.uint8)
    for patch, cls in zip(patches, labels):
        oy, ox = rng.uniform(-digit_px / 2, digit_px / 2, size=2)
        centres = np.arange(0, patch_size + digit_px, digit_px)
        for cy in centres + oy:
            for cx in centres + ox:
                _draw(patch, images[rng.choice(by_class[cls])], cy, cx, digit_px)
    return patches, labels


def digit_mosaic(cells: int, patch_size: int = 128, seed: int = 0) -> np.ndarray:
    """A (cells·P, cells·P, 3) uint8 image of ``cells``² `digit_patches` side by side, in random
    order: unlabelled slide texture on which encoders train before a probe on labelled patches.

    >>> digit_mosaic(2, patch_size=64).shape
    (128, 128, 3)
    """
    patches, _ = digit_patches(cells * cells, patch_size, seed=seed)
    patches = patches[np.random.default_rng(seed).permutation(cells * cells)]
    return (
        patches.reshape(cells, cells, patch_size, patch_size, 3)
        .transpose(0, 2, 1, 3, 4)
        .reshape(cells * patch_size, cells * patch_size, 3)
    )
