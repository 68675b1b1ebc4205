"""What a run tells the outside world while it trains: metric loggers and the operator's progress file.

Rank 0 only. The progress file is deliberately tiny and rate-limited: the operator polls it to fill the
FineTune's status, and on S3 every write is a PUT.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from okvqa_k8s.errors import UserError

log = logging.getLogger(__name__)

PROGRESS = "progress.json"
METRICS = "metrics.json"


class MetricLogger(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    def log(self, values: dict[str, float], step: int) -> None:
        return None

    def close(self) -> None:
        return None


class TensorBoardLogger:
    """Event files in node-local scratch, synced to `output_uri/tensorboard/` with each checkpoint.

    `purge_step` hides events a crashed attempt logged after the checkpoint this attempt resumed from,
    so the curve continues instead of doubling back.
    """

    def __init__(self, log_dir: Path, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step or None)

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"train/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """wandb, resumable across pod restarts (run id derived from the output URI); WANDB_MODE=offline works."""

    def __init__(self, output_uri: str, config: dict[str, Any], log_dir: Path) -> None:
        import wandb

        run_id = hashlib.sha256(output_uri.encode()).hexdigest()[:16]
        self.run = wandb.init(
            project="okvqa-k8s", id=run_id, resume="allow", config=config, dir=str(log_dir), reinit=True
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log({f"train/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


def check_report_to(report_to: str) -> None:
    """Fail before any process group exists when the chosen backend is not installed."""
    import importlib.util

    needed = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(report_to)
    if needed and importlib.util.find_spec(needed) is None:
        raise UserError(
            f"training.reportTo: {report_to} is not installed in this image (pip install {needed})"
        )


def make_logger(report_to: str, *, output_uri: str, config: dict[str, Any], log_dir: Path, resume_step: int):
    if report_to == "tensorboard":
        return TensorBoardLogger(log_dir, resume_step)
    if report_to == "wandb":
        return WandbLogger(output_uri, config, log_dir)
    return NullLogger()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class ProgressFile:
    """`output_uri/progress.json`: step, total_steps, loss, samples/s, epoch, updated — at most every N s."""

    def __init__(self, uri: str, min_interval_s: float = 5.0) -> None:
        self.uri = uri
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def update(
        self, *, step: int, total_steps: int, loss: float | None, sps: float, epoch: float, force=False
    ):
        from okvqa_k8s.storage import write_json

        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        write_json(
            self.uri,
            {
                "step": step,
                "total_steps": total_steps,
                "loss": loss,
                "samples_per_second": round(sps, 3),
                "epoch": round(epoch, 4),
                "updated": now_iso(),
            },
        )
