"""The ``nic-ray`` command. Each subcommand is a thin layer over a Python function.

Light by design: building the parser imports only the option dataclasses (no torch, no Ray);
a subcommand imports what it runs when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nic_ray.compress.options import CompressOptions
from nic_ray.datasets.options import SyntheticOptions
from nic_ray.encoder_training.options import EncoderOptions, ProbeOptions
from nic_ray.errors import NicError
from nic_ray.explain.options import HeatmapOptions
from nic_ray.options import add_flags, as_flags, options_of
from nic_ray.runtime.resources import Resources
from nic_ray.train.options import EvaluateOptions, TestTimeOptions, TrainOptions
from nic_ray.tune.options import SweepOptions


def _demo(args: argparse.Namespace) -> int:
    from nic_ray.demo import run_demo

    summary = run_demo(args.out, slides=args.slides, epochs=args.epochs)

    def interval(name: str) -> str:
        value, low, high = summary[name]
        return f"{value:.3f} [95% CI {low:.3f}, {high:.3f}]"

    print(f"compressed: {summary['compressed']} ({summary['store']})")
    print(f"test AUC {interval('auc')}, accuracy {interval('accuracy')}, C-index {interval('c_index')}")
    print(
        f"Grad-CAM region vs lesion mask: mean Jaccard {summary['jaccard']:.3f} over {summary['jaccard_slides']} "
        f"positive test slides; CMU-1-Small-Region predicted {summary['cmu_prediction']:.3f} ({summary['heatmaps']})"
    )
    print(f"report: {summary['report']}")
    print(f"store report: {summary['store_report']}")
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from nic_ray.datasets.synthetic_set import write_synthetic_set

    counts = write_synthetic_set(args.out, **options_of(args, SyntheticOptions))
    print(f"{args.out}: " + ", ".join(f"{n} {role}" for role, n in counts.items()) + " images")
    print(
        f"labels: {args.out}/labels.csv (split: train/val/test); encoder images: {args.out}/encoders.csv; "
        f"lesion masks: {args.out}/masks/"
    )
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


def _compress(args: argparse.Namespace) -> int:
    from nic_ray.compress import compress

    result = compress(args.sources, args.store, **options_of(args, CompressOptions))
    print(result.report)
    print(f"report: {args.store}/runs/{result.run_id}/report.parquet")
    return 0 if result.ok else 1


def _schedule(args: argparse.Namespace) -> int:
    from nic_ray.schedule import read_runtime_env, submit_slot

    if not args.address:
        raise NicError("--address: the cluster's job server, e.g. http://ray-head:8265 (or set RAY_ADDRESS)")
    options = as_flags(options_of(args, CompressOptions), CompressOptions)
    runtime_env = read_runtime_env(args.runtime_env) if args.runtime_env else None
    return submit_slot(
        args.sources, args.store, options, args.address, args.slot, wait=not args.no_wait, runtime_env=runtime_env
    )


def _status(args: argparse.Namespace) -> int:
    from nic_ray.store import Store
    from nic_ray.store.run_reports import run_summaries

    store = Store.open(args.store)
    print(f"{args.store}: {store.config.describe()}")
    slides = store.slides()
    print(f"{'slide_id':32} {'status':10} {'grid':>11} {'tissue tiles':>12}")
    for slide_id, info in slides.items():
        grid = "×".join(map(str, info.get("grid", []))) or "-"
        print(f"{slide_id:32} {info.get('status', '?'):10} {grid:>11} {info.get('n_tissue_tiles', 0):>12,}")
    complete = sum(info.get("status") == "complete" for info in slides.values())
    print(f"{complete} of {len(slides)} slides complete")
    runs = run_summaries(store.url)
    print(f"\n{'run':24} {'finished':19} {'complete':>8} {'skipped':>8} {'failed':>7} {'tiles':>10} {'tiles/s':>9}")
    for r in runs:
        rate = f"{r['tiles/s']:,.0f}" if r["tiles/s"] is not None else "-"
        print(
            f"{r['run']:24} {r['finished'] or '-':19} {r['complete']:>8} {r['skipped']:>8} {r['failed']:>7} "
            f"{r['tiles']:>10,} {rate:>9}"
        )
    return 0


def _train(args: argparse.Namespace) -> int:
    from nic_ray.train import train

    result = train(args.store, args.labels, args.task, args.out, **options_of(args, TrainOptions, Resources))
    for name, ids in (
        ("in the table but not complete in the store", result.not_in_store),
        ("complete in the store but not in the table", result.not_in_table),
    ):
        if ids:
            print(f"{len(ids)} slides {name} (left out): {', '.join(ids[:5])}{' …' if len(ids) > 5 else ''}")
    for part, best in result.parts.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in best.items() if k.startswith("val_"))
        print(f"{part}: best epoch {best['epoch']}: {shown}")
    print(f"run: {args.out} (nic-ray evaluate --run {args.out} --store {args.store} --labels {args.labels})")
    _print_report("run", args.out)
    return 0


def _print_report(kind: str, path: str) -> None:
    from nic_ray.report import run_report, store_report, sweep_report

    write = {"run": run_report, "sweep": sweep_report, "store": store_report}[kind]
    print(f"report: {write(path)}")


def _report(args: argparse.Namespace) -> int:
    kind = next(k for k in ("run", "sweep", "store") if getattr(args, k))
    _print_report(kind, getattr(args, kind))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nic_ray.train import predict

    table = predict(args.run, args.store, slides=args.slides, out=args.out, **options_of(args, TestTimeOptions))
    print(f"{table.num_rows} slides predicted: {args.out}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from nic_ray.train import evaluate, format_evaluation

    table = evaluate(args.run, args.store, args.labels, out=args.out, **options_of(args, EvaluateOptions))
    print(format_evaluation(table))
    print(f"written: {args.out or args.run + '/evaluation.parquet'}")
    if args.out is None:  # the run's report shows the run's own evaluation
        _print_report("run", args.run)
    return 0


def _heatmap(args: argparse.Namespace) -> int:
    from nic_ray.explain import heatmaps

    table = heatmaps(
        args.run,
        args.store,
        args.out,
        slides=args.slides,
        target=args.target,
        masks=args.masks,
        **options_of(args, HeatmapOptions),
    )
    for row in table.to_pylist():
        if row["status"] == "failed":
            print(f"failed: {row['slide_id']} ({row['target']}): {row['reason']}")
    done = sum(r == "complete" for r in table.column("status").to_pylist())
    jaccards = [j for j in table.column("jaccard").to_pylist() if j is not None and j == j]
    shown = f"; mean Jaccard {sum(jaccards) / len(jaccards):.3f} over {len(jaccards)} masks" if jaccards else ""
    print(f"{done} of {table.num_rows} heatmaps written to {args.out}{shown} ({args.out}/heatmaps.parquet)")
    _print_report("run", args.run)
    return 0 if done == table.num_rows else 1


def _train_parser(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train a slide-level CNN on a store and a label table (Ray Train)",
        description="Tasks are NAME:TYPE:COLUMNS with TYPE binary, multiclass, regression or survival, e.g. "
        "--task grade:multiclass:grade --task os:survival:time,event. Slides are split by the table's split "
        "column (train/val/test), its fold column, or --folds seeded folds (test f, validation f+1, train the rest). "
        "Run again with the same --out to resume.",
    )
    train.add_argument("--store", required=True)
    train.add_argument("--labels", required=True, help="CSV or Parquet with slide_id and the task columns")
    train.add_argument("--task", required=True, action="append", metavar="NAME:TYPE:COLUMNS")
    train.add_argument("--out", required=True, help="the run directory, local or s3://")
    add_flags(train, TrainOptions, Resources)
    train.set_defaults(handler=_train)

    tune = sub.add_parser(
        "tune",
        help="search the CNN's options (and stores) with Ray Tune: trials in parallel, ASHA, Optuna, resumable",
        description="Each trial trains on the validation split of the first part (the split column's, or fold 0) "
        "with the options below as its base and the space's on top. --space is a YAML file of option: constant or "
        "{uniform|loguniform|randint|choice: [...]} (default: learning rate, weight decay, width, depth, dropout, "
        "crop size, batch size, dihedral augmentation). Several --store: the store is searched too. Run again with "
        "the same --out to resume; SWEEP/best is a run for evaluate, predict and heatmap.",
    )
    tune.add_argument("--store", required=True, action="append", help="a store; repeat to search among stores")
    tune.add_argument("--labels", required=True, help="CSV or Parquet with slide_id and the task columns")
    tune.add_argument("--task", required=True, action="append", metavar="NAME:TYPE:COLUMNS")
    tune.add_argument("--out", required=True, help="the sweep directory, local or s3://")
    tune.add_argument("--space", help="the search space, a YAML file (default: the built-in space)")
    add_flags(tune, SweepOptions, TrainOptions, Resources)
    tune.set_defaults(handler=_tune)


def _tune(args: argparse.Namespace) -> int:
    from nic_ray.tune import sweep

    result = sweep(
        args.store,
        args.labels,
        args.task,
        args.out,
        space=args.space,
        **options_of(args, SweepOptions, TrainOptions, Resources),
    )
    metric = args.metric
    top = (
        result.trials.select([c for c in result.trials.column_names if c not in ("run", "stopped_by")])
        .slice(0, 5)
        .to_pandas()
    )
    print(top.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    counts = {s: result.trials.column("status").to_pylist().count(s) for s in ("finished", "stopped", "error")}
    print(
        f"{result.trials.num_rows} trials ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}), tuned on the "
        f"validation slides of {result.part}; best {metric} {result.best[metric]:.4g}: {args.out}/best "
        f"(all trials: {args.out}/trials.parquet)"
    )
    print(f"every part with the best options: {result.command}")
    _print_report("sweep", args.out)
    return 0


def _train_encoder(args: argparse.Namespace) -> int:
    from nic_ray.encoder_training import train_encoder

    result = train_encoder(
        args.method,
        args.out,
        slides=args.slides,
        tasks=dict(args.task or []),
        **options_of(args, EncoderOptions, Resources),
    )
    for slide, why in result.left_out.items():
        print(f"left out {slide}: {why}")
    last = result.history[-1]
    shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if "loss" in k or "accuracy" in k)
    print(f"epoch {last['epoch']}: {shown}; {last['patches_per_s']:.0f} patches/s")
    print(f"encoder: {result.encoder} (nic-ray compress SLIDES --store STORE --encoder {result.encoder})")
    return 0


def _task_source(text: str) -> tuple[str, str]:
    name, sep, source = text.partition("=")
    if not sep or not name or not source:
        raise argparse.ArgumentTypeError(f"--task {text!r}: expected NAME=PATCHES (an image folder or a table)")
    return name, source


def _probe_encoder(args: argparse.Namespace) -> int:
    from nic_ray.encoder_training.patches import load_patch_set
    from nic_ray.encoder_training.probe import format_probes, probe_encoder

    patches = load_patch_set(args.patches, args.mpp, args.patch_size)
    results = [probe_encoder(e, patches, **options_of(args, ProbeOptions)) for e in args.encoder]
    print(format_probes(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _encoder_parsers(sub) -> None:
    train = sub.add_parser(
        "train-encoder",
        help="train a NIC encoder (VAE, contrastive, BiGAN from slides; multitask from patch sets)",
        description="Unsupervised methods sample tissue patches from --slides (files, folders, globs, s3:// "
        "prefixes, manifests). Multitask trains one head per --task NAME=PATCHES, an image folder (one "
        "sub-folder a class) or a table of url, x, y, label. Run again with the same --out to resume.",
    )
    train.add_argument(
        "--method", required=True, help="vae, contrastive or bigan (from --slides); multitask (from --task)"
    )
    train.add_argument("--slides", nargs="+", metavar="SOURCE")
    train.add_argument("--task", action="append", type=_task_source, metavar="NAME=PATCHES")
    train.add_argument("--out", required=True, help="the run directory; the encoder is written to OUT/encoder")
    add_flags(train, EncoderOptions, Resources)
    train.set_defaults(handler=_train_encoder)

    probe = sub.add_parser(
        "probe-encoder", help="held-out accuracy of a classifier on frozen encoders' codes of a labelled patch set"
    )
    probe.add_argument("--encoder", nargs="+", required=True, help="names, checkpoint directories or import paths")
    probe.add_argument(
        "--patches", required=True, help="an image folder (one sub-folder a class) or a table of url, x, y, label"
    )
    probe.add_argument("--mpp", type=float, default=0.5, help="µm/px of patches read from slides (default: 0.5)")
    probe.add_argument("--patch-size", type=int, default=128, help="(default: 128)")
    add_flags(probe, ProbeOptions)
    probe.add_argument("--out", help="also write the results as JSON")
    probe.set_defaults(handler=_probe_encoder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nic-ray", description="Neural Image Compression of whole-slide images on Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="the whole job on an embedded Ray: synthetic cohort and the CMU slide compressed, a CNN trained and "
        "evaluated, Grad-CAM, reports",
        description="Run again with the same --out to reuse what is done.",
    )
    demo.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    demo.add_argument("--slides", type=int, default=56, help="synthetic slides, 4:1:2 train, val, test (default: 56)")
    demo.add_argument("--epochs", type=int, default=50, help="most epochs of training (default: 50; it stops early)")
    demo.set_defaults(handler=_demo)

    comp = sub.add_parser(
        "compress",
        help="compress slides into a store of grids (resumable; only new or changed slides are done)",
        description="SOURCE is a slide file, a directory or s3:// prefix, a glob, or a CSV/Parquet manifest "
        "with a url column (optional slide_id, mpp). Exit 0 when every slide is complete, 1 when some failed.",
    )
    comp.add_argument("sources", nargs="+", metavar="SOURCE")
    comp.add_argument("--store", required=True, help="the store: a local path or s3:// URL")
    add_flags(comp, CompressOptions)
    comp.set_defaults(handler=_compress)

    sched = sub.add_parser(
        "schedule",
        help="submit this schedule slot's compression to a Ray cluster as a job, once a slot (for cron)",
        description="The job's submission id names the store and the slot (--slot, a strftime format of the UTC "
        "time: the hour by default): a second submission in a slot prints one line and exits 0. Otherwise it waits "
        "for the job, prints its log and exits as the job did (0 every slide complete, 1 some failed, 2 bad input).",
    )
    sched.add_argument("sources", nargs="+", metavar="SOURCE")
    sched.add_argument("--store", required=True, help="the store: a local path the cluster shares, or s3:// URL")
    sched.add_argument(
        "--address", default=os.environ.get("RAY_ADDRESS"), help="the job server (default: $RAY_ADDRESS)"
    )
    sched.add_argument("--slot", default="%Y%m%d%H", help="the slot, a strftime format (default: %%Y%%m%%d%%H)")
    sched.add_argument("--no-wait", action="store_true", help="return once the job is submitted")
    sched.add_argument(
        "--runtime-env",
        metavar="YAML",
        help="the job's Ray runtime environment (jobs/runtime_env.yaml: this checkout's code; none when the "
        "cluster's image has nic-ray)",
    )
    add_flags(sched, CompressOptions)
    sched.set_defaults(handler=_schedule)

    status = sub.add_parser(
        "status", help="the slides of a store (status, grid size, tissue tiles) and its compression runs"
    )
    status.add_argument("store")
    status.set_defaults(handler=_status)

    _train_parser(sub)
    _encoder_parsers(sub)

    pred = sub.add_parser("predict", help="per-slide predictions of a trained run, to Parquet")
    pred.add_argument("--run", required=True)
    pred.add_argument("--store", required=True)
    pred.add_argument("--slides", help="a table whose slide_id column picks the slides (default: every complete slide)")
    pred.add_argument("--out", required=True, help="the Parquet file to write")
    add_flags(pred, TestTimeOptions)
    pred.set_defaults(handler=_predict)

    ev = sub.add_parser("evaluate", help="metrics of a trained run on labelled slides, with bootstrap 95%% intervals")
    ev.add_argument("--run", required=True)
    ev.add_argument("--store", required=True)
    ev.add_argument("--labels", required=True)
    ev.add_argument("--out", help="the Parquet file to write (default: RUN/evaluation.parquet)")
    add_flags(ev, EvaluateOptions)
    ev.set_defaults(handler=_evaluate)

    heat = sub.add_parser(
        "heatmap",
        help="Grad-CAM heatmaps of a trained run over whole slides: OME-Zarr, PNG, GeoJSON for QuPath",
        description="For each slide: where the run's CNN looked for --target (TASK, or TASK:CLASS, TASK:* for "
        "each class; default the first task, a multiclass task's predicted class). Cross-validated runs explain "
        "each slide with the fold model that never saw it. Exit 0 when every heatmap is written, 1 when some failed.",
    )
    heat.add_argument("--run", required=True)
    heat.add_argument("--store", required=True)
    heat.add_argument("--out", required=True, help="the folder to write into, local or s3://")
    heat.add_argument("--slides", help="a table whose slide_id column picks the slides (default: every complete slide)")
    heat.add_argument("--target", metavar="TASK[:CLASS]")
    heat.add_argument("--masks", help="a folder of <slide_id>.png|.tif|.npy masks (slide or grid resolution): Jaccard")
    add_flags(heat, HeatmapOptions)
    heat.set_defaults(handler=_heatmap)

    report = sub.add_parser(
        "report",
        help="one self-contained HTML page of a run, a sweep or a store (opens in any browser, offline)",
        description="A run: metrics with intervals, ROC, calibration, confusion, Kaplan-Meier curves, training "
        "curves, the best and worst slides with Grad-CAM. A sweep: trials over epochs, options against the metric. "
        "A store: compression runs, failures, slide thumbnails with their tissue grids. Written into the run, sweep "
        "or store as report.html.",
    )
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run directory (nic-ray train --out); evaluate it first for its metrics")
    which.add_argument("--sweep", help="a sweep directory (nic-ray tune --out)")
    which.add_argument("--store", help="a store")
    report.set_defaults(handler=_report)

    synthetic = sub.add_parser(
        "synthetic",
        help="write the paper's synthetic task (digits, an upright and a tilted rectangle) as a data set of slides",
        description="Digits everywhere at one density; a digit in a rectangle takes its class. Label: the tilted "
        "rectangle's class (10 classes, balanced within each role); mask: the tilted rectangle. MNIST cannot be "
        "downloaded here: scikit-learn's 8x8 digits stand in. Run again to finish a set that was stopped.",
    )
    synthetic.add_argument("--out", required=True, help="the folder to write into")
    add_flags(synthetic, SyntheticOptions)
    synthetic.set_defaults(handler=_synthetic)

    info = sub.add_parser("slide-info", help="levels, µm/px, level choice, grid and tissue of one slide")
    info.add_argument("slide", help="a slide file or s3:// URL")
    info.add_argument("--mpp", type=float, default=0.5, help="target µm/px (default: 0.5)")
    info.add_argument("--mpp-override", type=float, help="the slide's level-0 µm/px, if the file lacks or misstates it")
    info.add_argument("--patch-size", type=int, default=128)
    info.add_argument("--stride", type=int, help="default: the patch size")
    info.add_argument(
        "--tissue-threshold", type=float, default=0.1, help="tissue fraction of a tissue cell (default: 0.1)"
    )
    info.set_defaults(handler=_slide_info)
    return parser


def _check_storage(args: argparse.Namespace) -> None:
    """Every remote URL the command was given, checked before it starts (`check_storage`)."""
    from nic_ray.storage import check_storage

    for name, flag in URL_ARGUMENTS.items():
        value = getattr(args, name, None)
        for url in value if isinstance(value, list) else [value]:
            if isinstance(url, str):
                check_storage(url, flag)


# Arguments that may be s3:// URLs, and how the command line names them.
URL_ARGUMENTS = {
    "sources": "SOURCE",
    "slide": "SLIDE",
    "store": "--store",
    "labels": "--labels",
    "run": "--run",
    "sweep": "--sweep",
    "out": "--out",
    "slides": "--slides",
    "space": "--space",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Before Ray Data loads: its console log repeats what our progress lines say.
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(Path(__file__).with_name("ray_data_logging.yaml")))
    try:
        _check_storage(args)
        return args.handler(args)
    except NicError as e:
        print(f"nic-ray: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
