"""Image intake of the server: data: URLs, http(s) URLs, and every limit, checked before decoding."""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import struct
import time
import zlib
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse
from PIL import Image

from okvqa_k8s.serve.api_errors import APIError
from okvqa_k8s.serve.background import BackgroundServer
from okvqa_k8s.serve.images import ImageLimits, blocked_address, load_image, open_image


def _png(size: tuple[int, int] = (40, 30), colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _encoded(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "red").save(buf, fmt)
    return buf.getvalue()


def _data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _huge_header_png(width: int, height: int) -> bytes:
    """A real PNG whose IHDR claims `width` x `height`: tiny on the wire, gigapixels once decoded."""
    data = bytearray(_png((8, 8)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def _error(exc: pytest.ExceptionInfo[APIError]) -> tuple[int, str | None]:
    return exc.value.status, exc.value.code


def test_data_url_decodes_to_rgb() -> None:
    img = load_image(_data_url(_png((40, 30), "blue")), ImageLimits())
    assert img.mode == "RGB" and img.size == (40, 30)
    assert img.getpixel((5, 5)) == (0, 0, 255)


def test_grayscale_and_jpeg_become_rgb() -> None:
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "JPEG")
    img = load_image(_data_url(buf.getvalue(), "image/jpeg"), ImageLimits())
    assert img.mode == "RGB"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_every_supported_format_decodes(fmt: str) -> None:
    assert load_image(_data_url(_encoded(fmt)), ImageLimits()).size == (40, 30)


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("data:image/png;base64,@@not-base64@@", 400, "invalid_image"),
        ("data:image/png,rawbytes", 400, "invalid_image"),
        ("data:;nonsense", 400, "invalid_image"),
        ("ftp://example.com/x.png", 400, "invalid_image"),
        (_data_url(b"this is plain text, not an image"), 400, "invalid_image"),
        (_data_url(_png()[:60]), 400, "invalid_image"),  # truncated
        # Formats Pillow decodes but no VQA image comes in: refused before any of their decoders run.
        (_data_url(_encoded("TIFF"), "image/tiff"), 400, "invalid_image"),
        (_data_url(_encoded("ICO"), "image/x-icon"), 400, "invalid_image"),
        ("http://127.0.0.1:9/x.png", 400, "image_url_disabled"),
    ],
)
def test_bad_images_are_400(url: str, status: int, code: str) -> None:
    with pytest.raises(APIError) as exc:
        load_image(url, ImageLimits())
    assert _error(exc) == (status, code)


def test_oversize_is_413_before_decoding() -> None:
    data = _png((300, 300))
    limits = ImageLimits(max_image_bytes=len(data) - 1)
    with pytest.raises(APIError) as exc:
        load_image(_data_url(data), limits)
    assert _error(exc) == (413, "payload_too_large")
    assert load_image(_data_url(data), ImageLimits(max_image_bytes=len(data))).size == (300, 300)


def test_decompression_bomb_refused_from_header() -> None:
    bomb = _huge_header_png(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(APIError) as exc:
        open_image(bomb, ImageLimits())
    assert _error(exc) == (400, "image_too_many_pixels")
    assert "decompression bomb" in exc.value.message


def test_pixel_limit_is_configurable() -> None:
    data = _png((100, 100))
    with pytest.raises(APIError) as exc:
        open_image(data, ImageLimits(max_image_pixels=9_999))
    assert _error(exc) == (400, "image_too_many_pixels")
    assert open_image(data, ImageLimits(max_image_pixels=10_000)).size == (100, 100)


@pytest.fixture(scope="module")
def image_host():
    """A real HTTP server on 127.0.0.1: an image, a big 'image', a 404, redirects, a trickle."""
    app = FastAPI()
    png = _png((20, 20), "green")

    @app.get("/ok.png")
    def ok() -> Response:
        return Response(png, media_type="image/png")

    @app.get("/big.png")
    def big() -> Response:
        return Response(b"\x89PNG" + b"\0" * 5000, media_type="image/png")

    @app.get("/to")
    def redirect(url: str) -> Response:
        return Response(status_code=302, headers={"Location": url})

    @app.get("/slow.png")
    async def slow() -> StreamingResponse:
        async def trickle() -> AsyncIterator[bytes]:
            for byte in png:  # each read is quick; the whole takes ~len(png) * 0.05 s
                await asyncio.sleep(0.05)
                yield bytes([byte])

        return StreamingResponse(trickle(), media_type="image/png")

    with BackgroundServer(app) as srv:
        yield srv


LOCAL = ("127.0.0.1/32",)  # the test host's network, allowed explicitly


def test_http_urls_when_enabled(image_host: BackgroundServer) -> None:
    limits = ImageLimits(allow_urls=True, max_image_bytes=4096, url_allowed_networks=LOCAL)
    assert load_image(image_host.url + "/ok.png", limits).getpixel((1, 1)) == (0, 128, 0)
    with pytest.raises(APIError) as exc:
        load_image(image_host.url + "/big.png", limits)
    assert _error(exc) == (413, "payload_too_large")
    with pytest.raises(APIError) as exc:
        load_image(image_host.url + "/missing.png", limits)
    assert _error(exc) == (400, "image_fetch_failed")


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),  # cloud metadata
        ("100.64.0.1", True),  # carrier-grade NAT
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:127.0.0.1", True),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
    ],
)
def test_blocked_address(address: str, blocked: bool) -> None:
    assert blocked_address(ipaddress.ip_address(address), []) is blocked


def test_allowed_network_opens_only_itself() -> None:
    allowed = [ipaddress.ip_network("10.0.0.0/8")]
    assert not blocked_address(ipaddress.ip_address("10.4.5.6"), allowed)
    assert blocked_address(ipaddress.ip_address("192.168.0.1"), allowed)


def _fetch_code(url: str, limits: ImageLimits) -> tuple[int, str | None, str]:
    with pytest.raises(APIError) as exc:
        load_image(url, limits)
    return exc.value.status, exc.value.code, exc.value.message


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x.png", "http://[::1]:9/x.png"],
)
def test_non_public_addresses_are_refused_before_connecting(url: str) -> None:
    status, code, _ = _fetch_code(url, ImageLimits(allow_urls=True, url_timeout_s=1))
    assert (status, code) == (400, "image_url_blocked")


def test_loopback_is_refused_by_name_and_by_address(image_host: BackgroundServer) -> None:
    limits = ImageLimits(allow_urls=True)
    for url in (image_host.url + "/ok.png", f"http://localhost:{image_host.port}/ok.png"):
        status, code, message = _fetch_code(url, limits)
        assert (status, code) == (400, "image_url_blocked") and "not a public address" in message


def test_every_redirect_hop_is_checked(image_host: BackgroundServer) -> None:
    limits = ImageLimits(allow_urls=True, url_allowed_networks=LOCAL)
    followed = f"{image_host.url}/to?url={image_host.url}/ok.png"
    assert load_image(followed, limits).getpixel((1, 1)) == (0, 128, 0)  # an allowed hop is followed
    for target in ("http://169.254.169.254/latest/meta-data/", f"http://127.0.0.2:{image_host.port}/ok.png"):
        status, code, message = _fetch_code(f"{image_host.url}/to?url={target}", limits)
        assert (status, code) == (400, "image_url_blocked"), message
    loop = f"{image_host.url}/to?url={image_host.url}/to%3Furl%3D{image_host.url}/big.png"
    tight = ImageLimits(allow_urls=True, url_allowed_networks=LOCAL, max_redirects=1)
    assert _fetch_code(loop, tight)[2] == "image_url: more than 1 redirects"


def test_one_deadline_covers_the_whole_fetch(image_host: BackgroundServer) -> None:
    """Each byte comes well within a per-read timeout; the whole image does not come within 1 s."""
    limits = ImageLimits(allow_urls=True, url_allowed_networks=LOCAL, url_timeout_s=1.0)
    start = time.monotonic()
    status, code, message = _fetch_code(image_host.url + "/slow.png", limits)
    assert (status, code) == (400, "image_fetch_failed") and "longer than 1 s" in message
    assert time.monotonic() - start < 2.0
