"""The allocator's settings: large arrays made and freed again reuse the heap."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
import numpy as np
from wrapcodec.allocator import keep_freed_memory
if sys.argv[1] == "set":
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = np.ones(64 << 20, np.uint8)  # 64 MiB, as a training step's activations
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_large_arrays_are_not_faulted_in_again() -> None:
    # each 64 MiB array of the default allocator is a fresh mapping, faulted in anew
    assert _faults("set") < _faults("default") / 4
