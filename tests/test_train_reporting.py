"""The training metric loggers at unit level: wandb offline (no key, no network) and TensorBoard scalars.

The 12-step DeepSpeed run in test_train_single.py proves the trainer writes TensorBoard event files and
syncs them to output_uri; these prove what the files hold, and that wandb works with no network at all.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from okvqa_k8s.errors import UserError
from okvqa_k8s.train import reporting
from okvqa_k8s.train.reporting import (
    NullLogger,
    TensorBoardLogger,
    check_report_to,
    make_logger,
    wandb_mode,
    wandb_run_id,
)
from tests.conftest import require

OUTPUT_URI = "s3://bucket/finetunes/okvqa-run-1"
# What the trainer's _Loop.report hands the logger each step (its record less "step").
STEPS = {
    step: {
        "loss": round(2.0 / step, 6),
        "learning_rate": 2e-4 * step / 3,
        "mm_projector_lr": 2e-5 * step / 3,
        "samples_per_second": 10.0 + step,
        "tokens_per_second": 1000.0 + step,
        "epoch": step / 3,
    }
    for step in (1, 2, 3)
}


def needs_wandb() -> None:
    require(importlib.util.find_spec("wandb") is not None, "wandb is not installed (pip install .[wandb])")


# -- wandb offline ----------------------------------------------------------------------------------------
class _Sink:
    """A local TCP port that counts connections: wandb's base URL and every proxy point here."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Sink]:
    """WANDB_MODE=offline, every wandb directory in tmp, no credentials, no route to any server."""
    needs_wandb()
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(key, raising=False)
    sink = _Sink()
    nowhere = f"http://127.0.0.1:{sink.port}"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path / "wandb-dir"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
        "WANDB_ARTIFACT_DIR": str(tmp_path / "wandb-artifacts"),
        "WANDB_BASE_URL": nowhere,
        "HTTP_PROXY": nowhere,
        "HTTPS_PROXY": nowhere,
        "http_proxy": nowhere,
        "https_proxy": nowhere,
        "NO_PROXY": "",
        "no_proxy": "",
        "NETRC": str(tmp_path / "no-netrc"),
        "HOME": str(tmp_path / "home"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    # Anything in this process dialling a non-loopback address fails the test loudly.
    real_connect = socket.socket.connect
    dialled: list[Any] = []

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            dialled.append(address)
            raise OSError(f"test forbids network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    try:
        yield sink
    finally:
        sink.close()
    assert not dialled, f"wandb tried the network: {dialled}"
    assert sink.connections == 0, "wandb contacted its server (or a proxy) in offline mode"


def read_wandb_records(path: Path) -> list[Any]:
    """Decode an offline run's `.wandb` transaction log (leveldb-log framing of wandb Record protos)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a wandb transaction log"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, "corrupt record"
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def run_history(records: list[Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            out[record.history.step.num] = items
    return out


def offline_run_dirs(log_dir: Path, run_id: str) -> list[Path]:
    return sorted((log_dir / "wandb").glob(f"offline-run-*-{run_id}"))


def test_wandb_offline_logs_every_step_without_key_or_network(offline_wandb: _Sink, tmp_path: Path) -> None:
    log_dir = tmp_path / "scratch" / "tensorboard"
    logger = make_logger(
        "wandb",
        output_uri=OUTPUT_URI,
        config={"training": {"reportTo": "wandb"}},
        log_dir=log_dir,
        resume_step=0,
    )
    assert isinstance(logger, reporting.WandbLogger)
    assert logger.run.settings.mode == "offline" and not logger.run.settings.api_key
    for step, values in STEPS.items():
        logger.log(values, step)
    logger.close()
    logger.close()  # idempotent: the trainer may close after an error path already did

    (run_dir,) = offline_run_dirs(log_dir, wandb_run_id(OUTPUT_URI))
    (transaction_log,) = run_dir.glob("run-*.wandb")
    assert transaction_log.name == f"run-{wandb_run_id(OUTPUT_URI)}.wandb"
    assert (run_dir / "files").is_dir() and (run_dir / "logs" / "debug.log").is_file()

    # wandb's service process appends the last records asynchronously; under load they land a moment
    # after finish() returns, so wait (bounded) for the exit record rather than read once.
    deadline = time.monotonic() + 30
    while True:
        records = read_wandb_records(transaction_log)
        kinds = [r.WhichOneof("record_type") for r in records]
        if ("run" in kinds and "exit" in kinds) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "run" in kinds and "exit" in kinds, kinds  # finish() reached the log
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.run_id == wandb_run_id(OUTPUT_URI) and run.project == "okvqa-k8s"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["training"] == {"reportTo": "wandb"}

    history = run_history(records)
    assert sorted(history) == [1, 2, 3]
    for step, values in STEPS.items():
        logged = {k: v for k, v in history[step].items() if k.startswith("train/")}
        assert logged == pytest.approx({f"train/{k}": v for k, v in values.items()}), step
        assert history[step]["_step"] == step


def test_wandb_run_id_is_stable_across_restarts(offline_wandb: _Sink, tmp_path: Path) -> None:
    """Two attempts (pods) of one job: same output URI, same run, so wandb resumes instead of forking."""
    ids = []
    for attempt, log_dir in enumerate((tmp_path / "pod-a", tmp_path / "pod-b")):
        logger = reporting.WandbLogger(OUTPUT_URI, {"attempt": attempt}, log_dir)
        logger.log(STEPS[attempt + 1], attempt + 1)
        ids.append(logger.run.id)
        logger.close()
        assert offline_run_dirs(log_dir, logger.run_id)
    assert ids == [wandb_run_id(OUTPUT_URI)] * 2
    assert wandb_run_id(OUTPUT_URI + "/") == wandb_run_id(OUTPUT_URI)
    assert wandb_run_id("s3://bucket/finetunes/another") != wandb_run_id(OUTPUT_URI)


def test_wandb_mode_goes_offline_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine example.com login user password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mode() == "offline"
    netrc.write_text("machine api.wandb.ai login user password k" + "0" * 39 + "\n")
    assert wandb_mode() == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "missing"))
    assert wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"  # an explicit mode always wins


# -- TensorBoard ------------------------------------------------------------------------------------------
def read_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_files_hold_every_step(tmp_path: Path) -> None:
    log_dir = tmp_path / "tensorboard"
    logger = make_logger("tensorboard", output_uri=OUTPUT_URI, config={}, log_dir=log_dir, resume_step=0)
    assert isinstance(logger, TensorBoardLogger)
    for step, values in STEPS.items():
        logger.log(values, step)
    logger.close()

    assert list(log_dir.glob("events.out.tfevents.*"))
    scalars = read_scalars(log_dir)
    assert set(scalars) == {f"train/{k}" for k in STEPS[1]}
    for key in STEPS[1]:
        assert scalars[f"train/{key}"] == pytest.approx({s: v[key] for s, v in STEPS.items()}), key


def test_tensorboard_resume_hides_steps_past_the_checkpoint(tmp_path: Path) -> None:
    """A crashed attempt logged steps 1-3; the next resumes from checkpoint 1: its 2-3 replace the old."""
    log_dir = tmp_path / "tensorboard"
    first = TensorBoardLogger(log_dir, resume_step=0)
    for step, values in STEPS.items():
        first.log(values, step)
    first.close()
    second = TensorBoardLogger(log_dir, resume_step=2)
    for step in (2, 3):
        second.log({"loss": 9.0 + step}, step)
    second.close()
    assert read_scalars(log_dir)["train/loss"] == pytest.approx({1: STEPS[1]["loss"], 2: 11.0, 3: 12.0})


# -- dispatch ---------------------------------------------------------------------------------------------
def test_none_logs_nothing_and_unknown_backends_fail_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = make_logger("none", output_uri=OUTPUT_URI, config={}, log_dir=tmp_path / "tb", resume_step=0)
    assert isinstance(logger, NullLogger)
    logger.log(STEPS[1], 1)
    logger.close()
    assert not (tmp_path / "tb").exists()
    check_report_to("none")
    check_report_to("tensorboard")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match="pip install wandb"):
        check_report_to("wandb")
