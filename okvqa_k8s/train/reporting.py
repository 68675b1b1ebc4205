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


def wandb_mode() -> str:
    """`WANDB_MODE` when set; otherwise online with credentials, offline (never a login prompt) without.

    A pod has no TTY: wandb asking for a key there would fail the run after the model is loaded. Offline
    runs land under the TensorBoard directory, so they reach `output_uri/tensorboard/wandb/` with every
    checkpoint and `wandb sync` can upload them later. `WANDB_MODE=online` skips this guess.
    """
    import netrc
    import os
    from urllib.parse import urlparse

    mode = os.environ.get("WANDB_MODE", "").strip()
    if mode:
        return mode
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        found = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        found = None
    if found and found[2]:
        return "online"
    log.warning("wandb: no WANDB_API_KEY or netrc entry for %s, logging offline (set WANDB_MODE)", host)
    return "offline"


def wandb_run_id(output_uri: str) -> str:
    """One wandb run per output URI: every restart of the same job resumes it."""
    return hashlib.sha256(output_uri.rstrip("/").encode()).hexdigest()[:16]


class WandbLogger:
    """wandb, resumable across pod restarts (run id derived from the output URI); works offline.

    The run directory is `log_dir/wandb/` (the TensorBoard directory, synced with each checkpoint).
    """

    def __init__(self, output_uri: str, config: dict[str, Any], log_dir: Path) -> None:
        import wandb

        log_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = wandb_run_id(output_uri)
        self.run = wandb.init(
            project="okvqa-k8s",
            id=self.run_id,
            resume="allow",
            config=config,
            dir=str(log_dir),
            mode=wandb_mode(),
            reinit="finish_previous",
        )
        self._closed = False

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log({f"train/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
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
