"""scripts/cpu-share, the CPU sampler BENCHMARKS.md uses: a spinning process
reads as the CPU time it got (read from /proc by the test), a sleeping one as none, and bad
arguments are refused with a reason and status 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cpu-share"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def share(output: str, name: str) -> int:
    found = re.search(rf"^{name} \(pid \d+\): (\d+)% of one core$", output, re.M)
    assert found, output
    return int(found.group(1))


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_spinning_process_reads_as_the_cpu_it_got_and_a_sleeping_one_none():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # What the spinner got over the script's window, read independently:
        # on a busy machine that may be well under a core, so the sampler is
        # checked against it, not against a fixed share.
        before, started = cpu_seconds(spinner.pid), time.monotonic()
        result = run("2", f"spinner={spinner.pid}", f"sleeper={sleeper.pid}")
        got = 100 * (cpu_seconds(spinner.pid) - before) / (time.monotonic() - started)
    finally:
        spinner.kill()
        sleeper.kill()
        spinner.wait()
        sleeper.wait()
    assert result.returncode == 0, result.stderr
    spun = share(result.stdout, "spinner")
    assert 0 < spun <= 101, result.stdout
    # The test's window is a little wider than the script's (its start-up).
    assert abs(spun - got) <= 20, f"{result.stdout} (the test saw {got:.0f}%)"
    assert share(result.stdout, "sleeper") == 0, result.stdout
    assert re.search(r"^machine: \d+% idle of \d+ cores over \d+\.\d s$", result.stdout, re.M), result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "SECONDS NAME=PID"),
        (("1",), "SECONDS NAME=PID"),
        (("soon", "a=1"), "SECONDS must be a number"),
        (("1", "nopid"), "expected NAME=PID"),
        (("1", "a=b"), "expected NAME=PID"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_missing_process_is_named():
    result = run("1", "gone=999999999")
    assert result.returncode == 1
    assert "gone: no process 999999999" in result.stderr
