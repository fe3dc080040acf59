"""What the benchmarks print about the machine and where they find the shared data (imported by the scripts
beside it: `python benchmarks/NAME.py` puts this folder on the path)."""
from __future__ import annotations

import os
from pathlib import Path

DATA = Path(os.environ.get("ALAYA_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def cpu_model() -> str:
    """The CPU's model name (every figure is printed with it: AMD EPYC and Intel Xeon hosts differ)."""
    from alaya.infer.cpu_path import cpu_name

    return cpu_name()
