"""The report of a sweep: every trial's metric over its epochs (early stops visible), each
searched option against the metric, and the trials table."""

from __future__ import annotations

from nic_ray.errors import NicError
from nic_ray.report import plots
from nic_ray.report.page import Section, Table, cell, figure_image, write_page
from nic_ray.runtime.run_files import RunFiles
from nic_ray.tables import read_table


def sweep_report(sweep: str) -> str:
    """Write ``<sweep>/report.html`` and return its path.

    Example::

        sweep(["grids.zarr"], "labels.csv", ["label:binary:label"], "sweeps/label", trials=8)
        sweep_report("sweeps/label")  # 'sweeps/label/report.html'
    """
    files = RunFiles(sweep)
    if not files.exists("sweep.json") or not files.exists("trials.parquet"):
        raise NicError(f"{sweep}: not a finished sweep (no sweep.json and trials.parquet); run nic-ray tune")
    asked = files.read_json("sweep.json")
    metric = asked["sweep"]["metric"]
    trials = read_table(f"{files.url}/trials.parquet", "trials").to_pylist()
    columns = list(trials[0])
    searched = columns[columns.index("store") : columns.index("status")]
    if len({t["store"] for t in trials}) < 2:
        searched.remove("store")
    counts = {s: sum(t["status"] == s for t in trials) for s in ("finished", "stopped", "error")}
    best = trials[0]
    summary = Section(
        "Sweep",
        [
            f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; metric {metric}.",
            f"Best: trial {best['trial_id']}, {metric} {best[metric]:.4g} ("
            + ", ".join(f"{k} {cell(best[k])}" for k in searched)
            + f"); its run: {files.url}/best.",
        ],
    )
    curves: dict[str, tuple[list, list]] = {}
    part = RunFiles(best["run"]).read_json("run.json")["parts"][0]  # every trial trains this part
    for t in trials:
        run = RunFiles(t["run"])
        if run.exists(part, "history.csv"):
            rows = read_table(f"{run.url}/{part}/history.csv", "trial history").to_pylist()
            name = t["trial_id"] + (" (stopped)" if t["status"] == "stopped" else "")
            curves[name] = ([r["epoch"] for r in rows], [r.get(metric) for r in rows])
    progress = Section("Trials over epochs", ["Dashed: stopped early by ASHA."])
    if curves:
        progress.images.append(
            figure_image(plots.lines({metric: curves}, "each trial"), f"{metric} per epoch", wide=True)
        )
    options = Section("Each searched option against the metric")
    scored = [t for t in trials if t[metric] == t[metric]]
    for name in searched:
        values = [t[name].rstrip("/").rsplit("/", 1)[-1] if name == "store" else t[name] for t in scored]
        fig = plots.against(values, [t[metric] for t in scored], name, metric)
        options.images.append(figure_image(fig, name))
    shown = [c for c in columns if c != "run"]
    table = Section("Trials", tables=[Table(shown, [[t[c] for c in shown] for t in trials], id="trials")])
    return write_page(
        f"{files.url}/report.html",
        f"Sweep {files.url}",
        "a Ray Tune search by nic-ray",
        [summary, progress, options, table],
    )
