"""Model names that are Hugging Face hub ids, and getting them, the one way training and serving share.

`model.name` is a hub id, a local path or an s3:// URI. A hub id must be downloaded before a directory
can be loaded; training did this and the built-in server did not, so the spec's own default (builtin
engine, `llava-hf/llava-1.5-7b-hf`) served the base model from a path that did not exist and
crash-looped. Both now ask here.
"""

from __future__ import annotations

from pathlib import Path

from okvqa_k8s.errors import UserError


def is_local_path(name: str) -> bool:
    """A path (plain, relative, `~` or file://) or an existing directory; not a hub id, not s3://."""
    return name.startswith(("/", ".", "~", "file://")) or Path(name).exists()


def is_hub_id(name: str) -> bool:
    return "://" not in name and not is_local_path(name)


def hub_snapshot(name: str) -> Path:
    """The local snapshot of hub model `name`, downloaded into `HF_HOME` (in pods: the model volume)
    unless already there; with `HF_HUB_OFFLINE=1` only the cache is used."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name))
    except (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OSError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise UserError(
            f"model {name}: cannot get it from the Hugging Face hub ({type(exc).__name__}: {first})"
        ) from None
