"""`okvqa-k8s data stage` / `data fetch` and the hidden in-pod `sync pull/push`: thin click wrappers.

The commands only parse flags and print a summary; all decisions live in the storage package so the
training entrypoint gets the same behaviour through the Python API. `stage` and `fetch` join the `data`
group (`DATA_COMMANDS`); `sync` is used by init containers and the eval Job.
"""

from __future__ import annotations

from pathlib import Path

import click

from okvqa_k8s.storage import DEFAULT_SHARD_SIZE, fetch_dataset, parse_size, stage_dataset

_WORKERS = click.option(
    "--workers", default=8, show_default=True, type=click.IntRange(1, 128), help="Parallel transfers."
)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@click.command("stage")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("uri")
@click.option(
    "--shard-size",
    default=f"{DEFAULT_SHARD_SIZE // 2**20}MiB",
    show_default=True,
    help='Target tar shard size, e.g. "64MB" (SI) or "1GiB" (binary).',
)
@_WORKERS
@click.option("--verify", is_flag=True, help="Read every object back and check its sha256 after uploading.")
def stage(dataset_dir: Path, uri: str, shard_size: str, workers: int, verify: bool) -> None:
    """Upload a prepared DATASET_DIR to URI (s3://bucket/prefix or a path) as tar shards + manifest.

    The evaluation set `data prepare` writes to DATASET_DIR/eval goes to URI/eval, as a staged dataset
    of its own. Re-running skips objects already there with the same checksum, so an interrupted upload
    resumes.
    """
    size = parse_size(shard_size)
    summary = stage_dataset(dataset_dir, uri, shard_size=size, workers=workers, verify=verify)

    def report(summary: dict, target: str) -> None:
        for name, nested in summary.get("nested", {}).items():
            report(nested, f"{target.rstrip('/')}/{name}")
        click.echo(
            f"staged {summary['images']} images in {summary['shards']} shards + {summary['files']} files "
            f"({_mb(summary['total_bytes'])}) to {target}: uploaded {summary['uploaded_objects']} objects "
            f"({_mb(summary['uploaded_bytes'])}), skipped {summary['skipped_objects']}"
            + (", verified" if summary["verified"] else "")
        )

    report(summary, uri)


@click.command("fetch")
@click.argument("uri")
@click.argument("dest_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@_WORKERS
def fetch(uri: str, dest_dir: Path, workers: int) -> None:
    """Download a staged dataset from URI into DIR, verify every checksum and extract it safely.

    The copy appears atomically; re-running on a complete copy does nothing.
    """
    click.echo(f"dataset ready at {fetch_dataset(uri, dest_dir, workers=workers)}")


@click.group("sync", hidden=True)
def sync() -> None:
    """In-pod copies between storage and a directory (used by init containers and the eval Job)."""


@sync.command("pull")
@click.argument("uri")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", default=8, show_default=True)
def pull(uri: str, dest: Path, workers: int) -> None:
    """Copy URI (s3:// or a directory) into DEST; only changed files move."""
    from okvqa_k8s import storage

    count = storage.sync_down(uri, dest, workers=workers)
    click.echo(f"{count} files pulled from {uri} to {dest}")


@sync.command("push")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("uri")
@click.option("--workers", default=8, show_default=True)
def push(src: Path, uri: str, workers: int) -> None:
    """Copy directory SRC to URI; only changed files move."""
    from okvqa_k8s import storage

    count = storage.sync_up(src, uri, workers=workers)
    click.echo(f"{count} files pushed from {src} to {uri}")


DATA_COMMANDS = [stage, fetch]
COMMANDS = [sync]
