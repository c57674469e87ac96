"""Fixtures of the core's tests: a stand-in for what has no local counterpart (a GPU's nvidia-smi)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

STAND_IN = """#!/bin/sh
case "$*" in
  *index,name,memory.total*) printf '0, Tesla V100-SXM2-16GB, 16160 MiB\\n1, Tesla V100-SXM2-16GB, 16160 MiB\\n' ;;
  *utilization.gpu*) echo query >> "$(dirname "$0")/queries"; cat "$(dirname "$0")/utilization" ;;
  *) echo "stand-in nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two stand-in GPUs on every local node; write their utilization (one line each) into the returned file."""
    if shutil.which("nvidia-smi"):
        pytest.skip("a real nvidia-smi is on this machine: the stand-in would not be the one found")
    folder = tmp_path / "fake-gpu-bin"
    folder.mkdir()
    (folder / "nvidia-smi").write_text(STAND_IN)
    (folder / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    return folder / "utilization"
