"""The report of a trained run: how it learned, how well it predicts, where it looked.

Numbers come from the run's own files: ``evaluation.parquet`` (the metrics table, verbatim) and
its per-slide outputs (the curves), each part's ``history.csv`` (training), and Grad-CAM
overlays of the best and worst predicted slides, drawn into ``<run>/report/heatmaps`` once.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image as PILImage
from scipy.special import expit, softmax

from nic_ray.errors import NicError
from nic_ray.explain import heatmaps
from nic_ray.report import plots
from nic_ray.report.page import Image, Section, Table, figure_image, png_image, write_page
from nic_ray.runtime.run_files import RunFiles
from nic_ray.tables import read_table, write_bytes
from nic_ray.train.evaluation import outputs_path
from nic_ray.train.labels import Task

SHOWN_SLIDES = 3  # best and worst each


def run_report(run: str) -> str:
    """Write ``<run>/report.html`` and return its path.

    Example::

        evaluate("runs/brca", "brca.zarr", "labels.csv")
        run_report("runs/brca")  # 'runs/brca/report.html'
    """
    files = RunFiles(run)
    if not files.exists("run.json"):
        raise NicError(f"{run}: not a run (no run.json); train one with nic-ray train")
    described = files.read_json("run.json")
    tasks = [Task(t["name"], t["type"], tuple(t["columns"]), tuple(t["classes"])) for t in described["tasks"]]
    parts = [p for p in described["parts"] if files.exists(p, "history.csv")]
    sizes = {p: {k: len(v) for k, v in described["splits"][p].items()} for p in described["parts"]}
    sections = [
        Section(
            "Run",
            [
                f"Store {described['store']}; labels {described['labels']}.",
                "Tasks: " + ", ".join(f"{t.name} ({t.type})" for t in tasks) + ".",
                "Slides per part: "
                + "; ".join(f"{p}: " + ", ".join(f"{n} {k}" for k, n in s.items()) for p, s in sizes.items())
                + ".",
            ],
        )
    ]
    evaluation_url = f"{files.url}/evaluation.parquet"
    if files.exists("evaluation.parquet") and files.exists("evaluation-outputs.parquet"):
        metrics = read_table(evaluation_url, "evaluation").to_pylist()
        outputs = read_table(outputs_path(evaluation_url), "evaluation outputs")
        sections.append(_metrics_section(metrics))
        subset = _main_subset(metrics)
        for task in tasks:
            sections.append(_task_section(task, subset, metrics, outputs))
        sections.append(_slides_section(files, described, tasks, subset, outputs))
    else:
        sections.append(
            Section("Evaluation", [f"Not evaluated yet: nic-ray evaluate --run {run} --store STORE --labels LABELS"])
        )
    sections.append(_training_section(files, parts))
    return write_page(f"{files.url}/report.html", f"Run {files.url}", "a slide-level CNN trained by nic-ray", sections)


def _main_subset(metrics: list[dict]) -> str:
    """The subset the curves show: the pooled out-of-fold predictions, else the test split."""
    subsets = list(dict.fromkeys(r["subset"] for r in metrics))
    return next((s for s in ("all (out-of-fold)", "test") if s in subsets), subsets[0])


def _metrics_section(metrics: list[dict]) -> Section:
    columns = ["subset", "task", "metric", "value", "low", "high", "slides"]
    return Section(
        "Evaluation",
        ["95% intervals by bootstrap over slides (evaluation.parquet)."],
        [Table(columns, [[r[c] for c in columns] for r in metrics], id="evaluation")],
    )


def _task_outputs(outputs: pa.Table, subset: str, task: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = outputs.filter((pc.field("subset") == subset) & (pc.field("task") == task))
    ids = rows.column("id").to_pylist()
    target = np.array(rows.column("target").to_pylist(), dtype=float)
    output = np.array(rows.column("output").to_pylist(), dtype=float)
    known = ~np.isnan(target).any(axis=1)
    return [i for i, k in zip(ids, known) if k], target[known], output[known]


def _metric_text(metrics: list[dict], subset: str, task: str, metric: str) -> str:
    row = next((r for r in metrics if (r["subset"], r["task"], r["metric"]) == (subset, task, metric)), None)
    if row is None:
        return ""
    return f"{metric} {row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}], {row['slides']} slides"


def _task_section(task: Task, subset: str, metrics: list[dict], outputs: pa.Table) -> Section:
    section = Section(f"{task.name} ({task.type}) on {subset}")
    _, target, output = _task_outputs(outputs, subset, task.name)
    if len(target) < 2:
        section.text.append("Too few labelled slides to draw.")
        return section
    shown = [_metric_text(metrics, subset, task.name, m) for m in ("auc", "accuracy", "spearman", "pearson", "c_index")]
    section.text.append("; ".join(t for t in shown if t) + ".")
    title = f"{task.name}, {subset}"
    if task.type in ("binary", "multiclass"):
        classes = [str(c) for c in task.classes]
        truth = target[:, 0].astype(int)
        if task.type == "binary":
            probability = expit(output[:, 0])
            curves = {f"{classes[1]} vs {classes[0]}": (truth, probability)}
            predicted = (probability > 0.5).astype(int)
        else:
            probabilities = softmax(output, axis=1)
            curves = {f"{c} vs rest": (truth == i, probabilities[:, i]) for i, c in enumerate(classes)}
            predicted = probabilities.argmax(axis=1)
        curves = {k: v for k, v in curves.items() if len(np.unique(v[0])) == 2}
        if curves:
            section.images.append(figure_image(plots.roc(curves, f"ROC: {title}"), "ROC with 95% bootstrap bands"))
            section.images.append(figure_image(plots.calibration(curves, f"Calibration: {title}"), "calibration"))
        section.images.append(figure_image(plots.confusion(truth, predicted, classes, title), "confusion matrix"))
    elif task.type == "regression":
        section.images.append(figure_image(plots.regression(target[:, 0], output[:, 0], title), "predicted vs true"))
    else:
        time, event, risk = target[:, 0], target[:, 1].astype(bool), output[:, 0]
        for groups in (2, 3):
            if len(risk) >= 2 * groups:
                fig, p = plots.kaplan_meier(time, event, risk, groups, title)
                split = "median split" if groups == 2 else "tertiles"
                section.images.append(
                    figure_image(fig, f"Kaplan–Meier by predicted risk, {split}: log-rank p = {p:.3g}")
                )
    return section


def _errors(task: Task, target: np.ndarray, output: np.ndarray) -> np.ndarray:
    """How wrong each slide's prediction is: 1 − probability of its class, or the absolute error;
    for survival, how far its risk rank is from its rank by time (events first)."""
    if task.type == "binary":
        p = expit(output[:, 0])
        return np.where(target[:, 0] == 1, 1 - p, p)
    if task.type == "multiclass":
        return 1 - softmax(output, axis=1)[np.arange(len(target)), target[:, 0].astype(int)]
    if task.type == "regression":
        return np.abs(output[:, 0] - target[:, 0])
    by_time = np.argsort(np.argsort(target[:, 0]))
    by_risk = np.argsort(np.argsort(-output[:, 0]))
    return np.abs(by_time - by_risk).astype(float)


def _slides_section(files: RunFiles, described: dict, tasks: list[Task], subset: str, outputs: pa.Table) -> Section:
    task = tasks[0]
    ids, target, output = _task_outputs(outputs, subset, task.name)
    section = Section(f"Best and worst predicted slides: {task.name}, {subset}")
    if not ids:
        return section
    errors = _errors(task, target, output)
    order = np.argsort(errors, kind="stable")
    shown = list(dict.fromkeys([*order[:SHOWN_SLIDES], *order[::-1][:SHOWN_SLIDES]]))
    rows = [
        [ids[i], "best" if k < SHOWN_SLIDES else "worst", *target[i].tolist(), float(errors[i])]
        for k, i in enumerate(shown)
    ]
    columns = ["slide", "rank", *(task.columns if task.type != "multiclass" else [task.columns[0]]), "error"]
    section.tables.append(Table(columns, rows, id="slides"))
    out = f"{files.url}/report/heatmaps"  # drawn once for the slides shown
    picked = [ids[i] for i in shown]
    drawn = (
        read_table(f"{out}/heatmaps.parquet", "heatmaps")
        if files.exists("report", "heatmaps", "heatmaps.parquet")
        else None
    )
    if drawn is None or sorted(drawn.column("slide_id").to_pylist()) != sorted(picked):
        try:
            write_bytes(f"{out}/slides.csv", ("slide_id\n" + "".join(f"{s}\n" for s in picked)).encode())
            drawn = heatmaps(files.url, described["store"], out, slides=f"{out}/slides.csv", target=task.name)
        except NicError as e:
            section.text.append(f"No heatmaps: {e}")
            return section
    for row in drawn.to_pylist():
        if row["status"] != "complete":
            section.text.append(f"{row['slide_id']}: no heatmap ({row['reason']})")
            continue
        name = f"{row['slide_id']}/{row['target']}-overlay.png"
        png = files.fs.cat_file(files.path("report", "heatmaps", *name.split("/")))
        kind = "best" if picked.index(row["slide_id"]) < SHOWN_SLIDES else "worst"
        caption = f"{kind}: {row['slide_id']}, prediction {row['prediction']:.3g}"
        section.images.append(_small(png, caption, f"report/heatmaps/{name}"))
    return section


def _small(png: bytes, caption: str, link: str) -> Image:
    """A full-size overlay shown at half size, linked to the file."""
    picture = PILImage.open(io.BytesIO(png))
    picture.thumbnail((picture.width // 2, picture.height // 2))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return png_image(buffer.getvalue(), caption, link)


def _training_section(files: RunFiles, parts: list[str]) -> Section:
    section = Section("Training")
    histories = {p: read_table(f"{files.url}/{p}/history.csv", "history").to_pylist() for p in parts}
    if not histories:
        section.text.append("No epoch written yet.")
        return section
    panels: dict[str, dict[str, tuple[list, list]]] = {"loss": {}, "validation metrics": {}, "learning rate": {}}
    panels["loader wait (share of epoch)"] = {}
    for part, rows in histories.items():
        epochs = [r["epoch"] for r in rows]
        panels["loss"][f"{part} train"] = (epochs, [r["train_loss"] for r in rows])
        panels["loss"][f"{part} val"] = (epochs, [r["val_loss"] for r in rows])
        for key in rows[0]:
            if key.startswith("val_") and key != "val_loss":
                panels["validation metrics"][f"{part} {key[4:]}"] = (epochs, [r[key] for r in rows])
        panels["learning rate"][part] = (epochs, [r["lr"] for r in rows])
        panels["loader wait (share of epoch)"][part] = (epochs, [r["loader_wait"] for r in rows])
        best = (
            files.read_json(f"{part}/model/config.json")["best"] if files.exists(part, "model", "config.json") else {}
        )
        if best:
            section.text.append(f"{part}: {len(rows)} epochs, best (lowest val_loss) at epoch {best['epoch']}.")
    section.images.append(
        figure_image(plots.lines(panels, "per epoch", log_y=("learning rate",)), "training curves", wide=True)
    )
    return section
