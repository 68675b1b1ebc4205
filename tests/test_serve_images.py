"""Image intake of the server: data: URLs, http(s) URLs, and every limit, checked before decoding."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from PIL import Image

from okvqa_k8s.serve.api_errors import APIError
from okvqa_k8s.serve.background import BackgroundServer
from okvqa_k8s.serve.images import ImageLimits, load_image, open_image


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
    """A real HTTP server with an image, a big 'image' and a 404, on 127.0.0.1."""
    app = FastAPI()
    png = _png((20, 20), "green")

    @app.get("/ok.png")
    def ok() -> Response:
        return Response(png, media_type="image/png")

    @app.get("/big.png")
    def big() -> Response:
        return Response(b"\x89PNG" + b"\0" * 5000, media_type="image/png")

    with BackgroundServer(app) as srv:
        yield srv


def test_http_urls_when_enabled(image_host: BackgroundServer) -> None:
    limits = ImageLimits(allow_urls=True, max_image_bytes=4096)
    assert load_image(image_host.url + "/ok.png", limits).getpixel((1, 1)) == (0, 128, 0)
    with pytest.raises(APIError) as exc:
        load_image(image_host.url + "/big.png", limits)
    assert _error(exc) == (413, "payload_too_large")
    with pytest.raises(APIError) as exc:
        load_image(image_host.url + "/missing.png", limits)
    assert _error(exc) == (400, "image_fetch_failed")
