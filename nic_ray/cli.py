"""The ``nic-ray`` command. Each subcommand is a thin layer over a Python function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nic_ray.errors import NicError


def _demo(args: argparse.Namespace) -> int:
    from nic_ray.demo import run_demo

    summary = run_demo(args.out, n_slides=args.slides)
    print(summary["report"])
    print(f"labels (class of the tilted rectangle): {summary['labels']}")
    print(f"{summary['shown']}: level {summary['level']} at {summary['mpp']} µm/px, grid "
          f"{summary['grid'][0]}×{summary['grid'][1]}, {summary['tissue_cells']} tissue cells (# below)")
    print(summary["tissue_map"])
    print(f"store: {summary['store']} (nic-ray status {summary['store']})")
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


def _resource(text: str) -> tuple[str, float]:
    name, _, amount = text.partition("=")
    try:
        return name, float(amount or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=AMOUNT, not {text!r}") from None


def _compress(args: argparse.Namespace) -> int:
    from nic_ray.compress import compress

    result = compress(
        args.sources, args.store, encoder=args.encoder, mpp=args.mpp, patch_size=args.patch_size, stride=args.stride,
        orientations=args.orientations, encoders=args.encoders, gpus_per_encoder=args.gpus_per_encoder,
        cpus_per_encoder=args.cpus_per_encoder,
        encoder_resources=dict(args.encoder_resource),
        batch_size=args.batch_size, tissue_threshold=args.tissue_threshold, overwrite=args.overwrite,
    )
    print(result.report)
    print(f"report: {args.store}/runs/{result.run_id}/report.parquet")
    return 0 if result.ok else 1


def _status(args: argparse.Namespace) -> int:
    from nic_ray.compress import Store

    store = Store.open(args.store)
    print(f"{args.store}: {store.config.describe()}")
    slides = store.slides()
    print(f"{'slide_id':32} {'status':10} {'grid':>11} {'tissue tiles':>12}")
    for slide_id, info in slides.items():
        grid = "×".join(map(str, info.get("grid", []))) or "-"
        print(f"{slide_id:32} {info.get('status', '?'):10} {grid:>11} {info.get('n_tissue_tiles', 0):>12,}")
    complete = sum(info.get("status") == "complete" for info in slides.values())
    print(f"{complete} of {len(slides)} slides complete")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nic-ray", description="Neural Image Compression of whole-slide images on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write synthetic slides, compress them on an embedded Ray, show one grid")
    demo.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    demo.add_argument("--slides", type=int, default=3, help="how many synthetic slides (default: 3)")
    demo.set_defaults(run=_demo)

    comp = sub.add_parser(
        "compress", help="compress slides into a store of grids (resumable; only new or changed slides are done)",
        description="SOURCE is a slide file, a directory or s3:// prefix, a glob, or a CSV/Parquet manifest "
        "with a url column (optional slide_id, mpp). Exit 0 when every slide is complete, 1 when some failed.",
    )
    comp.add_argument("sources", nargs="+", metavar="SOURCE")
    comp.add_argument("--store", required=True, help="the store: a local path or s3:// URL")
    comp.add_argument("--encoder", default="mean-rgb", help="mean-rgb, nic, a checkpoint dir, or package.module:factory")
    comp.add_argument("--mpp", type=float, help="µm/px to compress at (default: the encoder's)")
    comp.add_argument("--patch-size", type=int, help="patch size (default: the encoder's)")
    comp.add_argument("--stride", type=int, help="default: the patch size")
    comp.add_argument("--orientations", type=int, choices=(1, 8), default=1, help="8: every tile in all 8 dihedral orientations")
    comp.add_argument("--encoders", type=int, default=1, help="encoder actors (default: 1)")
    comp.add_argument("--gpus-per-encoder", type=float, default=0, help="GPUs per encoder actor; 0 = CPU (default)")
    comp.add_argument("--cpus-per-encoder", type=float, default=1,
                      help="CPUs per encoder actor: its decoding threads, and torch threads on CPU (default: 1)")
    comp.add_argument("--encoder-resource", type=_resource, action="append", default=[], metavar="NAME=AMOUNT",
                      help="a custom Ray resource each encoder actor needs (pins encoders to such nodes); repeatable")
    comp.add_argument("--batch-size", type=int, default=256, help="tiles per encoder batch (default: 256)")
    comp.add_argument("--tissue-threshold", type=float, default=0.1, help="tissue fraction of a cell to encode it (default: 0.1)")
    comp.add_argument("--overwrite", action="store_true", help="redo slides that are complete already")
    comp.set_defaults(run=_compress)

    status = sub.add_parser("status", help="the slides of a store: status, grid size, tissue tiles")
    status.add_argument("store")
    status.set_defaults(run=_status)

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
    # Before Ray Data loads: its console log repeats what our progress lines say.
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(Path(__file__).with_name("ray_data_logging.yaml")))
    try:
        return args.run(args)
    except NicError as e:
        print(f"nic-ray: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
