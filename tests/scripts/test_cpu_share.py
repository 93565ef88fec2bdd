"""scripts/cpu-share, the CPU sampler BENCHMARKS.md uses: a process spinning
on one core reads as most of a core, a sleeping one as none, and bad
arguments are refused with a reason and status 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cpu-share"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def share(output: str, name: str) -> int:
    found = re.search(rf"^{name} \(pid \d+\): (\d+)% of one core$", output, re.M)
    assert found, output
    return int(found.group(1))


def test_a_spinning_process_uses_a_core_and_a_sleeping_one_none():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        result = run("2", f"spinner={spinner.pid}", f"sleeper={sleeper.pid}")
    finally:
        spinner.kill()
        sleeper.kill()
        spinner.wait()
        sleeper.wait()
    assert result.returncode == 0, result.stderr
    # One core at most; at least a clear part of one even on a busy machine.
    assert 30 <= share(result.stdout, "spinner") <= 101, result.stdout
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
