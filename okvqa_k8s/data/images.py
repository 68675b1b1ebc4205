"""Image checks shared by dataset preparation and anything else that opens user images.

A truncated JPEG or a decompression bomb must fail here, with the file named, rather than inside a
dataloader worker on some GPU node hours later.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# COCO images are at most 640x640; 40 megapixels leaves room for other sources and stops bombs early.
DEFAULT_MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    """Why an image is unusable, phrased to follow the file name."""


def check_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """Open and fully decode `path`; return (width, height) or raise ImageError saying why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb?)"
                    )
                img.load()
    except FileNotFoundError:
        raise ImageError("image file is missing") from None
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("too many pixels (decompression bomb)") from None
    except OSError as exc:
        raise ImageError(f"unreadable or truncated image ({exc})") from None
    if width < 1 or height < 1:
        raise ImageError("image has no pixels")
    return width, height
