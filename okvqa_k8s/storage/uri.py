"""The one URI model: `s3://bucket/prefix` or a local path (plain or `file://`).

Training, staging and the demo all address storage by string, so a run can switch between a laptop
directory and an S3 bucket by changing one value; every function here is pure string handling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from okvqa_k8s.errors import UserError


@dataclass(frozen=True)
class Location:
    """A parsed URI: `bucket` and `key` for S3 (key without leading slash), `path` for local files."""

    scheme: str  # "s3" or "file"
    bucket: str = ""
    key: str = ""
    path: str = ""


def parse(uri: str) -> Location:
    """Split a URI; anything without a scheme is a local path so plain paths keep working everywhere."""
    if not uri:
        raise UserError("empty storage URI: expected s3://bucket/prefix or a local path")
    if "://" not in uri:
        return Location("file", path=os.path.abspath(os.path.expanduser(uri)))
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if not parts.netloc or "/" in parts.netloc:
            raise UserError(f"bad S3 URI {uri!r}: expected s3://bucket/prefix")
        return Location("s3", bucket=parts.netloc, key=parts.path.lstrip("/"))
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UserError(f"bad file URI {uri!r}: expected file:///absolute/path (no host)")
        return Location("file", path=os.path.abspath(unquote(parts.path)))
    raise UserError(f"unsupported storage URI {uri!r}: expected s3://bucket/prefix or a local path")


def _clean_parts(parts: tuple[str, ...]) -> list[str]:
    """Path segments of `parts`; `..` is refused because S3 keys would keep it literally."""
    segments: list[str] = []
    for part in parts:
        for segment in str(part).replace("\\", "/").split("/"):
            if segment in ("", "."):
                continue
            if segment == "..":
                raise UserError(f"refusing '..' in storage path segment {part!r}")
            segments.append(segment)
    return segments


def join(uri: str, *parts: str) -> str:
    """Append path segments, keeping the style of `uri` (s3://, file:// or plain path)."""
    segments = _clean_parts(parts)
    if not segments:
        return uri
    if "://" in uri:
        return (uri if uri.endswith("/") else uri + "/") + "/".join(segments)
    return os.path.join(uri, *segments)
