"""``python -m gohsp_lightning.onnx_cli <pruned_dir> <out.onnx>``: export a pruned model to ONNX.

Bad input (a missing or broken export directory, a missing optional package, an export that
onnxruntime does not reproduce) exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import one_line
from .pruning.onnx_export import export_onnx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gohsp_lightning.onnx_cli",
        description="Export a pruned model directory (model.safetensors + config.json) to one ONNX file.",
    )
    parser.add_argument("pruned_dir", type=Path, help="directory written by save_pruned (a run's pruned/)")
    parser.add_argument("out", type=Path, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch size instead of a dynamic one")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime vs PyTorch check")
    args = parser.parse_args(argv)
    try:
        path = export_onnx(
            args.pruned_dir, args.out, opset=args.opset, dynamic_batch=not args.static_batch, verify=not args.no_verify
        )
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
