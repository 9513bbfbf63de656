"""The Hydra callback that rebuilds a multirun's report after every job."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from ..errors import one_line
from .report import build_report
from .rows import CSV_FILE, record_failure

log = logging.getLogger(__name__)


class SweepReport(Callback):
    """Rebuilds the report of a multirun after each job and at the end (single runs are left alone).

    A job that raises (rather than returning after recording its failure, as the CLI does) is recorded
    here from Hydra's ``JobReturn``, so it still becomes a failed row.
    """

    def __init__(self) -> None:
        self.sweep_dirs: set[Path] = set()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode != RunMode.MULTIRUN:
            return
        if job_return.status == JobStatus.FAILED and isinstance(job_return._return_value, BaseException):
            record_failure(hydra_cfg.runtime.output_dir, job_return._return_value)
        sweep_dir = (Path(hydra_cfg.runtime.cwd) / hydra_cfg.sweep.dir).resolve()  # cwd may be the job dir
        self.sweep_dirs.add(sweep_dir)
        self._build(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for sweep_dir in sorted(self.sweep_dirs):
            rows = self._build(sweep_dir)
            failed = [r for r in rows if r["status"] != "ok"]
            log.info(f"sweep report: {len(rows) - len(failed)} ok, {len(failed)} failed -> {sweep_dir / CSV_FILE}")
            for row in failed:
                log.warning(f"job {row['job']} {row['status']}: {row['error']}")

    @staticmethod
    def _build(sweep_dir: Path) -> list[dict[str, Any]]:
        """A report that cannot be built is logged, never allowed to stop the sweep."""
        try:
            return build_report(sweep_dir)
        except Exception as err:  # the jobs' results on disk matter more than the report
            log.error(f"sweep report for {sweep_dir} failed: {type(err).__name__}: {one_line(err)}")
            return []
