"""Reports that open in a browser: one self-contained HTML page for a run, a sweep or a store.

Example::

    from nic_ray.report import run_report
    run_report("runs/brca")  # 'runs/brca/report.html'
"""

from nic_ray.report.run_report import run_report
from nic_ray.report.store_report import store_report
from nic_ray.report.sweep_report import sweep_report

__all__ = ["run_report", "store_report", "sweep_report"]
