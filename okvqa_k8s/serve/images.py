"""Turning an `image_url` content part into a checked RGB image, within explicit limits.

Images come from the network, so every step is bounded before work is done: the encoded size is
checked before base64 decoding, the pixel count is read from the header before any pixel is decoded
(a 50 kB PNG can expand to gigabytes: a decompression bomb), and http(s) URLs are off unless the
operator enables them, because fetching arbitrary URLs from inside a cluster is a server-side request
forgery risk.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image

from okvqa_k8s.data.images import ImageError, TooManyPixels, decode_image
from okvqa_k8s.serve.api_errors import bad_request, too_large

MiB = 1 << 20
DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.IGNORECASE
)


@dataclass(frozen=True)
class ImageLimits:
    """What one request may carry; defaults suit LLaVA's 336 px input with generous head-room."""

    max_image_bytes: int = 10 * MiB
    max_image_pixels: int = 40_000_000
    max_images_per_request: int = 1
    allow_urls: bool = False
    url_timeout_s: float = 10.0


def decode_data_url(url: str, limits: ImageLimits) -> bytes:
    """`data:image/...;base64,...` → bytes; oversize is 413, anything malformed 400."""
    match = DATA_URL.match(url)
    if not match:
        raise bad_request(
            "image_url: malformed data: URL (expected data:image/<type>;base64,<data>)",
            code="invalid_image",
            param="image_url",
        )
    if not match.group("b64"):
        raise bad_request(
            "image_url: data: URL must be base64-encoded", code="invalid_image", param="image_url"
        )
    payload = url[match.end() :]
    # Base64 expands 3 bytes to 4 characters: refuse before decoding anything big.
    if len(payload) * 3 // 4 > limits.max_image_bytes + 3:
        raise too_large(f"image is larger than the {limits.max_image_bytes} byte limit", param="image_url")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(
            "image_url: invalid base64 in data: URL", code="invalid_image", param="image_url"
        ) from None
    if len(data) > limits.max_image_bytes:
        raise too_large(f"image is larger than the {limits.max_image_bytes} byte limit", param="image_url")
    return data


def fetch_url(url: str, limits: ImageLimits) -> bytes:
    """GET an http(s) image, stopping as soon as the body passes the byte limit."""
    import httpx

    if not limits.allow_urls:
        raise bad_request(
            "image_url: http(s) image URLs are disabled on this server; send a data: URL "
            "(the operator can enable them with --allow-image-urls)",
            code="image_url_disabled",
            param="image_url",
        )
    try:
        with httpx.stream("GET", url, timeout=limits.url_timeout_s, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise bad_request(
                    f"image_url: fetching the image returned HTTP {resp.status_code}",
                    code="image_fetch_failed",
                    param="image_url",
                )
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limits.max_image_bytes:
                raise too_large(
                    f"image is larger than the {limits.max_image_bytes} byte limit", param="image_url"
                )
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > limits.max_image_bytes:
                    raise too_large(
                        f"image is larger than the {limits.max_image_bytes} byte limit", param="image_url"
                    )
            return bytes(buf)
    except httpx.HTTPError as exc:
        raise bad_request(
            f"image_url: could not fetch the image ({type(exc).__name__})",
            code="image_fetch_failed",
            param="image_url",
        ) from None


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode bytes into an RGB image, refusing non-images and decompression bombs with a 400."""
    try:
        return decode_image(io.BytesIO(data), limits.max_image_pixels).convert("RGB")
    except TooManyPixels as exc:
        raise bad_request(f"image_url: {exc}", code="image_too_many_pixels", param="image_url") from None
    except ImageError as exc:
        raise bad_request(f"image_url: {exc}", code="invalid_image", param="image_url") from None


def load_image(url: str, limits: ImageLimits) -> Image.Image:
    """Any supported `image_url.url` → RGB image."""
    lowered = url[:8].lower()
    if lowered.startswith("data:"):
        data = decode_data_url(url, limits)
    elif lowered.startswith(("http://", "https://")):
        data = fetch_url(url, limits)
    else:
        raise bad_request(
            "image_url: expected a data: URL or an http(s) URL", code="invalid_image", param="image_url"
        )
    return open_image(data, limits)
