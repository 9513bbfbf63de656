"""Dense vs pruned, measured side by side: the pieces of ``scripts/benchmark.py``, importable and tested.

* :mod:`.models`: the dense model and its exported pruned twin, and what makes a pruned model slow;
* :mod:`.measure`: inference, latency-plan, training-step and ranking comparisons;
* :mod:`.output`: the printed tables and the environment line.

Timing is the core's interleaved median (``pruning/timing.py``: dense, pruned, dense, pruned, ...).
No figure here is asserted by a test: speed claims are the script's printed ratios, never a timed test.
"""

from ..pruning.timing import interleaved
from .measure import BenchmarkOptions, bench_inference, bench_latency_plan, bench_ranking, bench_training
from .models import build_models, calibration_batches, model_checks

__all__ = [
    "BenchmarkOptions",
    "bench_inference",
    "bench_latency_plan",
    "bench_ranking",
    "bench_training",
    "build_models",
    "calibration_batches",
    "interleaved",
    "model_checks",
]
