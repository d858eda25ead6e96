"""The embedded default job, whole: slides → store → CNN → evaluation → Grad-CAM → reports.

``nic-ray demo`` (``./dev demo``) writes a synthetic cohort whose label is the stain of a lesion
(`write_stained_cohort`: the NIC synthetic task's tilted rectangle, inked between haematoxylin
purple and brown, with lesion masks and survival), adds the real CMU-1-Small-Region slide,
compresses them with the mean-RGB encoder on an embedded Ray, trains the slide CNN on label and
survival (Ray Train), evaluates it with bootstrap intervals, draws Grad-CAM heatmaps of the test
slides and the CMU slide (Jaccard against the lesion masks), and writes the run's and the store's
reports. Run again, it reuses what is done: slides written, grids compressed, the model trained,
its evaluation and heatmaps (while the model is unchanged).

Example::

    summary = run_demo("demo-out")
    summary["auc"], summary["report"]  # (value, low, high), 'demo-out/run/report.html'
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nic_ray.compress import compress
from nic_ray.datasets.cohort import write_stained_cohort
from nic_ray.datasets.samples import cmu_small_region
from nic_ray.explain import heatmaps
from nic_ray.report import run_report, store_report
from nic_ray.tables import read_table
from nic_ray.train import evaluate, train

TASKS = ["label:binary:label", "os:survival:time,event"]
PATCH = 32  # px at 0.5 µm/px: the cohort's 1024² slides are 32 × 32 grids


def run_demo(out: str | Path = "demo-out", slides: int = 56, epochs: int = 50) -> dict:
    """Run the whole job into ``out`` on ``slides`` synthetic slides and the CMU slide; return
    its figures and where everything is (also written to ``<out>/summary.json``)."""
    out = Path(out)
    if not (out / "labels.csv").exists():  # written last: a cohort without it is redone
        write_stained_cohort(out, slides)
    store, run, labels = out / "store.zarr", out / "run", out / "labels.csv"
    cmu = cmu_small_region()
    compressed = compress([str(out / "slides"), str(cmu)], str(store), encoder="mean-rgb", patch_size=PATCH)
    train(store, labels, TASKS, run, crop_size=24, epochs=epochs)
    model = run / "single" / "model" / "model.safetensors"
    evaluation = run / "evaluation.parquet"
    table = (
        read_table(str(evaluation), "evaluation")
        if _after(evaluation, model)
        else evaluate(str(run), str(store), str(labels))
    )
    metrics = {(r["subset"], r["task"], r["metric"]): (r["value"], r["low"], r["high"]) for r in table.to_pylist()}

    rows = read_table(str(labels), "labels").to_pylist()
    test = [r["slide_id"] for r in rows if r["split"] == "test"]
    positive = {r["slide_id"] for r in rows if r["split"] == "test" and r["label"] == 1}
    picked = out / "heatmap-slides.csv"
    picked.write_text("slide_id\n" + "".join(f"{s}\n" for s in [*test, cmu.stem]))
    drawn = (
        read_table(str(out / "heatmaps" / "heatmaps.parquet"), "heatmaps")
        if _after(out / "heatmaps" / "heatmaps.parquet", model)
        else heatmaps(str(run), str(store), str(out / "heatmaps"), slides=str(picked), masks=str(out / "masks"))
    )
    jaccards = [r["jaccard"] for r in drawn.to_pylist() if r["slide_id"] in positive]
    summary = {
        "slides": slides,
        "compressed": compressed.counts(),
        "auc": metrics[("test", "label", "auc")],
        "accuracy": metrics[("test", "label", "accuracy")],
        "c_index": metrics[("test", "os", "c_index")],
        "jaccard": float(np.mean(jaccards)),
        "jaccard_slides": len(jaccards),
        "cmu_prediction": next(r["prediction"] for r in drawn.to_pylist() if r["slide_id"] == cmu.stem),
        "store": str(store),
        "run": str(run),
        "heatmaps": str(out / "heatmaps"),
        "report": run_report(str(run)),
        "store_report": store_report(str(store)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _after(done: Path, model: Path) -> bool:
    """Whether ``done`` was written after the model was: what a run again may reuse."""
    return done.exists() and done.stat().st_mtime_ns >= model.stat().st_mtime_ns
