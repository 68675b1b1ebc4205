"""The one URI model: `s3://bucket/prefix` or a local path (plain or `file://`).

Training, staging and the demo all address storage by string, so a run can switch between a laptop
directory and an S3 bucket by changing one value; every function here is pure string handling.
"""

from __future__ import annotations

import ipaddress
import os
import re
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


# Amazon S3's bucket naming rules (general purpose buckets), which MinIO applies too. A name breaking them
# would otherwise reach botocore, whose ParamValidationError names no field and repeats on every call.
_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_problem(name: str) -> str | None:
    """What makes `name` an invalid S3 bucket name, or None when it is valid."""
    if not 3 <= len(name) <= 63:
        return f"bucket name {name!r} must be 3 to 63 characters long"
    if not _BUCKET_CHARS.match(name):
        return (
            f"bucket name {name!r} may hold only lowercase letters, digits, '.' and '-', "
            "and must begin and end with a letter or digit"
        )
    if ".." in name:
        return f"bucket name {name!r} must not contain two adjacent periods"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return f"bucket name {name!r} must not be formatted as an IP address"
    if name.startswith(_RESERVED_PREFIXES) or name.endswith(_RESERVED_SUFFIXES):
        return f"bucket name {name!r} uses a prefix or suffix S3 reserves"
    return None


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
        if problem := bucket_problem(parts.netloc):
            raise UserError(f"bad S3 URI {uri!r}: {problem}")
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
