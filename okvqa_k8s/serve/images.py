"""Turning an `image_url` content part into a checked RGB image, within explicit limits.

Images come from the network, so every step is bounded before work is done: the encoded size is
checked before base64 decoding, the pixel count is read from the header before any pixel is decoded
(a 50 kB PNG can expand to gigabytes: a decompression bomb), and http(s) URLs are off unless the
operator enables them, because fetching arbitrary URLs from inside a cluster is a server-side request
forgery risk. When they are on, every hop (redirects are followed here, not by httpx) is resolved
first and refused when any address is not public (loopback, private, link-local such as the cloud
metadata endpoint 169.254.169.254, ...) unless the operator allowed its network; the connection then
goes to the address that was checked (no second lookup to rebind), and one deadline covers the fetch.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from okvqa_k8s.data.images import ImageError, TooManyPixels, decode_image
from okvqa_k8s.serve.api_errors import APIError, bad_request, too_large

if TYPE_CHECKING:
    import httpx

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
    url_timeout_s: float = 10.0  # the whole fetch of one image, redirects included
    url_allowed_networks: tuple[str, ...] = ()  # non-public networks image URLs may still reach
    max_redirects: int = 5


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def blocked_address(ip: IPAddress, allowed: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Whether an image fetch may not connect to `ip`: anything not globally routable (loopback,
    private, link-local, carrier-grade NAT, unspecified, reserved) or multicast, unless allowed."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in net for net in allowed):
        return False
    return not ip.is_global or ip.is_multicast


def _too_large(limits: ImageLimits) -> APIError:
    return too_large(f"image is larger than the {limits.max_image_bytes} byte limit", param="image_url")


def _fetch_error(message: str, code: str = "image_fetch_failed") -> APIError:
    return bad_request(f"image_url: {message}", code=code, param="image_url")


def _checked_address(host: str, port: int, limits: ImageLimits) -> str:
    """The address to connect to for `host`, every address it resolves to having been checked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _fetch_error(f"cannot resolve {host}") from None
    allowed = [ipaddress.ip_network(net) for net in limits.url_allowed_networks]
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    for ip in addresses:
        if blocked_address(ip, allowed):
            raise _fetch_error(
                f"{host} resolves to {ip}, which is not a public address (the operator can allow its "
                "network with --image-url-allow-network)",
                code="image_url_blocked",
            )
    return str(addresses[0])


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
        raise _too_large(limits)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(
            "image_url: invalid base64 in data: URL", code="invalid_image", param="image_url"
        ) from None
    if len(data) > limits.max_image_bytes:
        raise _too_large(limits)
    return data


def fetch_url(url: str, limits: ImageLimits) -> bytes:
    """GET an http(s) image within one deadline, checking every hop's addresses before connecting and
    stopping as soon as the body passes the byte limit."""
    import httpx

    if not limits.allow_urls:
        raise bad_request(
            "image_url: http(s) image URLs are disabled on this server; send a data: URL "
            "(the operator can enable them with --allow-image-urls)",
            code="image_url_disabled",
            param="image_url",
        )
    deadline = time.monotonic() + limits.url_timeout_s
    # trust_env=False: a proxy from the environment would connect to hosts that were never checked.
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        try:
            for _ in range(limits.max_redirects + 1):
                target = httpx.URL(url)
                if target.scheme not in ("http", "https") or not target.host:
                    raise _fetch_error("expected an http(s) URL", code="invalid_image")
                port = target.port or (443 if target.scheme == "https" else 80)
                address = _checked_address(target.host, port, limits)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise httpx.TimeoutException("deadline")
                request = client.build_request(
                    "GET",
                    target.copy_with(host=address),
                    headers={"Host": target.netloc.decode("ascii")},
                    timeout=remaining,
                    extensions={"sni_hostname": target.host},  # TLS checks the name, not the address
                )
                resp = client.send(request, stream=True)
                try:
                    if not resp.is_redirect:
                        return _read_image(resp, limits, deadline)
                    url = str(target.join(resp.headers["location"]))
                finally:
                    resp.close()
            raise _fetch_error(f"more than {limits.max_redirects} redirects")
        except httpx.TimeoutException:
            raise _fetch_error(f"fetching the image took longer than {limits.url_timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise _fetch_error(f"could not fetch the image ({type(exc).__name__})") from None


def _read_image(resp: httpx.Response, limits: ImageLimits, deadline: float) -> bytes:
    """The body of a final (non-redirect) response, within the byte limit and the deadline."""
    import httpx

    if resp.status_code != 200:
        raise _fetch_error(f"fetching the image returned HTTP {resp.status_code}")
    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_image_bytes:
        raise _too_large(limits)
    buf = bytearray()
    for chunk in resp.iter_bytes():
        buf += chunk
        if len(buf) > limits.max_image_bytes:
            raise _too_large(limits)
        if time.monotonic() > deadline:
            raise httpx.TimeoutException("deadline")
    return bytes(buf)


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
