"""The ``nic-ray`` command. Each subcommand is a thin layer over a Python function."""

from __future__ import annotations

import argparse
import json
import sys

from nic_ray.errors import NicError


def _demo(args: argparse.Namespace) -> int:
    from nic_ray.demo import run_demo

    summary = run_demo(args.out, n_slides=args.slides)
    print(f"wrote {len(summary['slides'])} synthetic slides (labels {summary['labels']})")
    print(f"{summary['shown']}: level {summary['level']} at {summary['mpp']} µm/px, "
          f"grid {summary['grid'][0]}×{summary['grid'][1]}, {summary['tissue_cells']} tissue cells "
          f"(# below), {summary['seconds']} s")
    print(summary["tissue_map"])
    print(f"compressed grid (mean-rgb, one cell = 8 px): {summary['grid_png']}")
    return 0


def _slide_info(args: argparse.Namespace) -> int:
    from nic_ray.slides import open_slide, tile_grid, tissue_fraction

    with open_slide(args.slide, mpp=args.mpp_override) as slide:
        grid = tile_grid(slide, mpp=args.mpp, patch_size=args.patch_size, stride=args.stride)
        tissue = tissue_fraction(slide, grid)
        info = {
            "slide": slide.source,
            "vendor": slide.vendor,
            "identity": slide.identity,
            "levels": [vars(lv) for lv in slide.levels],
            "fast_levels": list(slide.fast_levels),
            "grid": grid.to_dict() | {"shape": list(grid.shape)},
            "tissue_cells": int((tissue >= round(args.tissue_threshold * 255)).sum()),
        }
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nic-ray", description="Neural Image Compression of whole-slide images on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write synthetic slides and show the compressed grid of one")
    demo.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    demo.add_argument("--slides", type=int, default=3, help="how many synthetic slides (default: 3)")
    demo.set_defaults(run=_demo)

    info = sub.add_parser("slide-info", help="levels, µm/px, level choice, grid and tissue of one slide")
    info.add_argument("slide", help="a slide file or s3:// URL")
    info.add_argument("--mpp", type=float, default=0.5, help="target µm/px (default: 0.5)")
    info.add_argument("--mpp-override", type=float, help="the slide's level-0 µm/px, if the file lacks or misstates it")
    info.add_argument("--patch-size", type=int, default=128)
    info.add_argument("--stride", type=int, help="default: the patch size")
    info.add_argument("--tissue-threshold", type=float, default=0.1, help="tissue fraction of a tissue cell (default: 0.1)")
    info.set_defaults(run=_slide_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except NicError as e:
        print(f"nic-ray: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
