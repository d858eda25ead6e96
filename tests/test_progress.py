"""Progress: tqdm's bar on a terminal, whole lines now and then in a log."""

import contextlib
import fcntl
import io
import os
import re
import select
import struct
import termios
import time

from nic_ray.progress import progress


def test_a_log_gets_whole_lines_with_rate_and_eta_at_most_every_log_every_seconds():
    log = io.StringIO()  # not a terminal, as a job's log
    for _ in progress(range(6), "heatmaps", unit="slide", file=log, log_every=0.25):
        time.sleep(0.1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and all(line.startswith("[nic-ray] heatmaps: ") for line in lines), lines
    # Nothing before log_every has passed, then a line at most every log_every, and the last one.
    assert 2 <= len(lines) <= 4, lines
    assert re.search(r"100% 6/6 \[00:0\d<00:00, +[\d.]+slide/s\]$", lines[-1]), lines[-1]
    assert re.search(r"\d/6 \[00:00<00:0\d, +[\d.]+slide/s\]$", lines[0]), lines[0]


def test_a_short_step_writes_nothing_to_a_log():
    log = io.StringIO()
    for _ in progress(range(3), "predict", file=log, log_every=30):
        pass
    assert log.getvalue() == ""


def test_a_terminal_gets_a_bar_redrawn_in_place():
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))  # 40 rows, 100 columns
    with os.fdopen(slave, "w") as terminal:
        for _ in progress(range(4), "compress", unit="slide", file=terminal, mininterval=0):
            time.sleep(0.01)
    shown = b""
    with contextlib.suppress(OSError):  # Linux ends a closed terminal's output with EIO
        while select.select([master], [], [], 0.5)[0]:  # all of it, in however many reads
            shown += os.read(master, 65536)
    os.close(master)
    shown = shown.decode()
    assert "\r" in shown and "compress: 100%" in shown and "4/4" in shown and "slide/s" in shown, shown
