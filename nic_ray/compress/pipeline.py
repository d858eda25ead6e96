"""`compress`: an archive of slides into a store, streamed through Ray Data.

The driver decides which slides need work (new, changed, incomplete, or ``overwrite``), claims
them, and streams them through planning tasks into encoder actors that read, encode and write
each block (`nic_ray.compress.stages`). It
counts written blocks per slide and marks a slide complete when its last block is written, so
a killed run leaves nothing that looks complete and a re-run redoes only what is missing. A run
whose cluster loses every node that can hold an encoder ends at once, its unfinished slides failed.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import ray
from ray.data._internal.execution.execution_callback import ExecutionCallback

from nic_ray.compress.options import CompressOptions
from nic_ray.compress.stages import Settings, plan_slide
from nic_ray.cpu_memory import worker_runtime_env
from nic_ray.errors import NicError
from nic_ray.options import split_options
from nic_ray.progress import Progress
from nic_ray.ray_cluster import cluster_capacity, fitting_count, require_resources
from nic_ray.ray_metrics import CompressionMetrics
from nic_ray.slides import SlideSource, expand_sources
from nic_ray.slides.cache import absolute, source_identity
from nic_ray.store import Store, StoreConfig
from nic_ray.store.claims import Claims
from nic_ray.store.run_reports import write_report


@dataclass
class CompressResult:
    """What a run did: one report row per slide (status, tiles, seconds, reason)."""

    run_id: str
    store: str
    rows: list[dict] = field(default_factory=list)
    report: str = ""

    @property
    def ok(self) -> bool:
        return all(r["status"] in ("complete", "skipped") for r in self.rows)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.rows:
            out[r["status"]] += 1
        return dict(out)


class EncodersLost(NicError):
    """Mid-run, the cluster lost every node that could hold an encoder, with no autoscaler to
    bring one back."""


class _WatchEncoders(ExecutionCallback):
    """Ends a run at once when the cluster can no longer hold its encoders: Ray would wait for ever
    to restart the actors of a lost node. Reads what they need from the Dataset's context."""

    NEEDS = "nic_ray.encoders"
    EVERY = 2.0  # seconds between looks: each asks the GCS

    def __init__(self) -> None:
        self._next_look = 0.0

    def on_execution_step(self, executor) -> None:
        if time.monotonic() < self._next_look:
            return
        self._next_look = time.monotonic() + self.EVERY
        try:
            require_resources(*executor._data_context.get_config(self.NEEDS), hint="add a node that can and run again")
        except NicError as e:
            raise EncodersLost(f"the cluster lost the nodes that held the encoders: {e}") from None


def compress(sources: list[str], store: str, *, progress: bool = True, **options) -> CompressResult:
    """Compress every slide of ``sources`` into ``store``; ``options`` are `CompressOptions`
    (``nic-ray compress --help``).

    Example::

        result = compress(["slides/"], "grids.zarr", encoder="nic")
        result.ok, result.counts()  # (True, {'complete': 12})
    """
    # Here, not at the top: every Ray worker imports this package, and only encoders need torch.
    from nic_ray.encoders import encoder_identity, load_encoder

    (opts,) = split_options(options, CompressOptions)
    slides = expand_sources(sources)
    store = absolute(store)
    shape = {k: v for k, v in (("patch_size", opts.patch_size), ("mpp", opts.mpp)) if v is not None}
    enc = load_encoder(opts.encoder, **shape)
    for name, asked in shape.items():
        if getattr(enc, name) != asked:
            raise NicError(f"encoder {opts.encoder!r} takes {name} {getattr(enc, name)}, not {asked}")
    identity = encoder_identity(opts.encoder, enc)
    each = {"GPU": opts.gpus_per_encoder, "CPU": opts.cpus_per_encoder, **opts.encoder_resources}
    # Planning tasks need a CPU beside the encoders: without one Ray Data would wait for ever.
    planning = ("planning slides", {"CPU": 1})
    needs = ("encoder", each, opts.encoders or 1, planning)
    require_resources(*needs)
    # By default the pool grows from one actor while blocks queue, up to what the cluster holds:
    # a small job does not start (and import torch in) actors it cannot feed.
    actors = (
        {"size": opts.encoders} if opts.encoders else {"min_size": 1, "max_size": fitting_count(each, besides=planning)}
    )
    config = StoreConfig(identity, opts.stride or enc.patch_size, opts.orientations)
    target = Store.create_or_open(store, config)
    settings = Settings(
        str(store),
        enc.mpp,
        enc.patch_size,
        config.stride,
        opts.orientations,
        enc.code_size,
        round(opts.tissue_threshold * 255),
    )

    run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    result = CompressResult(run_id, str(store))

    def needs_work(s: SlideSource, existing: dict) -> bool:
        info = existing.get(s.slide_id)
        if opts.overwrite or info is None or info.get("status") != "complete":
            return True
        if info.get("source") != s.url:
            return True
        try:
            return source_identity(s.url) != info.get("identity")
        except NicError:
            return True  # let planning report what is wrong with it

    existing = target.slides()
    with ThreadPoolExecutor(16) as pool:  # stat calls: S3 answers slowly, one at a time
        todo_flags = list(pool.map(lambda s: needs_work(s, existing), slides))
    for s, todo in zip(slides, todo_flags):
        if not todo:
            result.rows.append(_report_row(s, "skipped", reason="complete already"))
    todo = [s for s, t in zip(slides, todo_flags) if t]

    start = time.perf_counter()
    with Claims(str(store), run_id) as claims:
        with ThreadPoolExecutor(16) as pool:
            holders = list(pool.map(lambda s: claims.claim(s.slide_id), todo))
        mine = [s for s, h in zip(todo, holders) if h is None]
        elsewhere = [(s, h) for s, h in zip(todo, holders) if h is not None]
        # Another run may have completed some between our look and our claim.
        now = target.slides()
        for s in [s for s in mine if not needs_work(s, now)]:
            claims.release(s.slide_id)
            mine.remove(s)
            result.rows.append(_report_row(s, "skipped", reason="completed by another run"))
        if progress:
            print(
                f"[nic-ray] run {run_id}: {len(slides)} slides, {len(result.rows)} complete already, "
                f"{len(mine)} to compress" + (f", {len(elsewhere)} claimed by other runs" if elsewhere else ""),
                file=sys.stderr,
                flush=True,
            )
        if mine:
            result.rows += _run_dataset(mine, target, settings, opts, shape, actors, needs, claims, progress, start)
        result.rows += _await_other_runs(elsewhere, target, claims)
    result.report = write_report(str(store), run_id, result.rows, seconds=time.perf_counter() - start)
    return result


def _report_row(s: SlideSource, status: str, tiles: int = 0, seconds: float = 0.0, reason: str = "") -> dict:
    return {
        "slide_id": s.slide_id,
        "url": s.url,
        "status": status,
        "tiles": tiles,
        "seconds": round(seconds, 3),
        "reason": reason,
    }


def _run_dataset(
    slides: list[SlideSource],
    target: Store,
    settings: Settings,
    opts: CompressOptions,
    shape: dict,
    actors: dict,
    needs: tuple,
    claims: Claims,
    progress: bool,
    start: float,
) -> list[dict]:
    from nic_ray.compress.encode import CONCURRENT_CALLS, EncodeBlocks

    by_id = {s.slide_id: s for s in slides}
    # On a GPU one block reads while the one before it encodes. On CPUs both stages would share
    # the same cores, to no gain (benchmarks/compress.py), and hold a second block in memory.
    calls = CONCURRENT_CALLS if opts.gpus_per_encoder > 0 else 1
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.target_max_block_size, ctx.enable_progress_bars, ctx.custom_execution_callback_classes)
    # One block of work per Ray block, so blocks of one slide are read by parallel tasks.
    ctx.target_max_block_size, ctx.enable_progress_bars = 1, False
    ctx.custom_execution_callback_classes = [*saved[2], _WatchEncoders]
    ctx.set_config(_WatchEncoders.NEEDS, needs)
    try:
        items = [{"slide_id": s.slide_id, "url": s.url, "mpp": math.nan if s.mpp is None else s.mpp} for s in slides]
        # Planning tasks a few to a CPU, each planning its share of slides in turn: for archives
        # of small images Ray's cost of a task a slide is more than the planning itself.
        planners = min(len(items), 4 * max(2, int(cluster_capacity().get("CPU", 0))))
        ds = ray.data.from_items(items, override_num_blocks=planners)
        ds = ds.flat_map(plan_slide, fn_kwargs={"settings": settings})
        ds = ds.map_batches(
            EncodeBlocks,
            batch_size=1,
            fn_constructor_kwargs={
                "encoder": opts.encoder,
                "encoder_kwargs": shape,
                "settings": settings,
                "batch_size": opts.batch_size,
                "use_gpu": opts.gpus_per_encoder > 0,
                "threads": max(1, int(opts.cpus_per_encoder)),
            },
            compute=ray.data.ActorPoolStrategy(
                **actors, max_concurrent_calls_per_actor=calls, enable_true_multi_threading=True
            ),
            num_gpus=opts.gpus_per_encoder,
            num_cpus=opts.cpus_per_encoder,
            resources=opts.encoder_resources,
            runtime_env=worker_runtime_env(),
        )
    finally:
        ctx.target_max_block_size, ctx.enable_progress_bars, ctx.custom_execution_callback_classes = saved
        ctx.remove_config(_WatchEncoders.NEEDS)

    written: dict[str, int] = defaultdict(int)
    tiles: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    failed: dict[str, str] = {}
    rows, total_tiles = [], 0
    bar = Progress(total=len(by_id), desc="compress", unit="slide", disable=not progress)
    published = CompressionMetrics(settings.store)

    def done(row: dict) -> None:
        rows.append(row)
        rate = total_tiles / max(time.perf_counter() - start, 1e-9)
        published.slide(row["status"], row["tiles"], rate)
        bar.set_postfix_str(f"{total_tiles:,} tiles, {rate:,.0f} tiles/s, {len(failed)} failed", refresh=False)
        bar.update(1)

    unfinished = "not every block was written"  # cannot happen unless a stage lost a row
    try:
        for row in ds.iter_rows():
            slide_id = str(row["slide_id"])
            if slide_id in failed:
                continue
            if row["error"]:
                failed[slide_id] = str(row["error"])
                done(_report_row(by_id[slide_id], "failed", reason=failed[slide_id]))
                claims.release(slide_id)
                continue
            written[slide_id] += 1
            tiles[slide_id] += int(row["n_tiles"])
            total_tiles += int(row["n_tiles"])
            seconds[slide_id] += float(row["read_seconds"] + row["encode_seconds"] + row["write_seconds"])
            if written[slide_id] == int(row["n_blocks"]):
                # Every planned block is written: only now does the slide become complete.
                target.mark_complete(
                    slide_id,
                    run_id=claims.run_id,
                    n_tiles=tiles[slide_id],
                    timings={"work_seconds": round(seconds[slide_id], 3)},
                )
                claims.release(slide_id)
                done(_report_row(by_id[slide_id], "complete", tiles[slide_id], seconds[slide_id]))
    except EncodersLost as e:
        unfinished = str(e)
        if progress:
            print(f"[nic-ray] {e}", file=sys.stderr, flush=True)
    bar.close()
    finished = {r["slide_id"] for r in rows}
    for slide_id in by_id.keys() - finished:
        rows.append(_report_row(by_id[slide_id], "failed", reason=unfinished))
        claims.release(slide_id)
    return rows


def _await_other_runs(elsewhere, target: Store, claims: Claims, poll: float = 2.0) -> list[dict]:
    """Slides another live run is compressing: wait until it completes or drops them."""
    rows = []
    for s, holder in elsewhere:
        while True:
            # The holder first: a run that completes the slide releases its claim after.
            now = claims.holder(s.slide_id)
            if target.slide_info_or_none(s.slide_id).get("status") == "complete":
                rows.append(_report_row(s, "complete", reason=f"by run {holder}"))
                break
            if now is None or not claims.is_alive(now):
                rows.append(
                    _report_row(s, "failed", reason=f"run {holder} claimed it but did not complete it; run again")
                )
                break
            time.sleep(poll)
    return rows
