"""What the benchmark prints: aligned tables and the line saying on what it measured."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

import timm
import torch

INFERENCE_HEADERS = ["device", "dtype", "mode", "batch", "dense ms", "pruned ms", "dense img/s", "pruned img/s"]
INFERENCE_HEADERS += ["speedup", "MACs red.", "efficiency"]
# fixed widths, so that inference rows printed one at a time line up
INFERENCE_WIDTHS = [6, 5, 8, 5, 10, 10, 11, 12, 8, 10, 10]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], header: bool = True) -> str:
    """Right-aligned columns as wide as their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return _aligned(headers, rows, widths, header)


def format_inference(rows: Sequence[dict[str, Any]], header: bool = True) -> str:
    """Rows of :func:`.measure.bench_inference` (a skipped batch says why)."""
    cells = []
    for r in rows:
        head = [r["device"], r["dtype"], r["mode"], str(r["batch"])]
        if "skipped" in r:
            cells.append(head + [r["skipped"]] + [""] * 6)
            continue
        cells.append(
            head
            + [f"{r['dense_ms']:.1f}", f"{r['pruned_ms']:.1f}", f"{r['dense_img_s']:.1f}", f"{r['pruned_img_s']:.1f}"]
            + [f"{r['speedup']:.3f}x", f"{r['flops_reduction']:.3f}x", f"{r['efficiency']:.3f}"]
        )
    return _aligned(INFERENCE_HEADERS, cells, INFERENCE_WIDTHS, header)


def _aligned(headers: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int], header: bool) -> str:
    lines = []
    if header:
        lines.append("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
        lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def environment(devices: Sequence[str]) -> dict[str, Any]:
    """Versions, threads and load: what a reader needs to judge the figures."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    if "cuda" in devices:
        env["gpu"] = torch.cuda.get_device_name()
    return env
