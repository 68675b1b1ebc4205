"""Image decoding with limits, shared by dataset preparation and the inference server.

A truncated JPEG or a decompression bomb must fail here, with the reason stated, rather than inside a
dataloader worker on some GPU node hours later or by exhausting a server's memory: the pixel count is
read from the header and checked before a single pixel is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

# COCO images are at most 640x640; 40 megapixels leaves room for other sources and stops bombs early.
DEFAULT_MAX_PIXELS = 40_000_000
# The formats a VQA image comes in. Pillow would otherwise try each of its ~40 decoders on whatever bytes
# a request or a dataset holds (EPS through Ghostscript, rarely used parsers): less code sees the input.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


class ImageError(ValueError):
    """Why an image is unusable, phrased to follow the file name."""


class TooManyPixels(ImageError):
    """The header declares more pixels than allowed: a decompression bomb or simply too big."""


def decode_image(source: str | Path | IO[bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image (path or binary file object), or raise ImageError saying why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source, formats=FORMATS)
            width, height = img.size  # header only: nothing decoded yet
            if width * height > max_pixels:
                raise TooManyPixels(
                    f"{width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)"
                )
            img.load()
    except FileNotFoundError:
        raise ImageError("image file is missing") from None
    except UnidentifiedImageError:
        raise ImageError("not an image in a supported format (JPEG, PNG, WebP, GIF, BMP)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels(f"over {max_pixels} pixels (decompression bomb)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"unreadable or truncated image ({exc})") from None
    if width < 1 or height < 1:
        raise ImageError("image has no pixels")
    return img


def check_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Fully decode the image at `path` and return (width, height); ImageError if unusable."""
    with decode_image(path, max_pixels) as img:
        return img.size
