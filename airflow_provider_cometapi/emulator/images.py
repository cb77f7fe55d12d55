"""Deterministic placeholder images in the requested format, size and quality.

Pillow is imported only when an image is actually rendered: the package (and the emulator's
JSON routes) work without it, and benchmarks that never download pay nothing.
"""

from __future__ import annotations

import base64
import functools
import io
import random

from airflow_provider_cometapi.emulator.models import ASPECT_RATIOS

# output_format -> (Pillow format, MIME type)
FORMATS: dict[str, tuple[str, str]] = {
    "webp": ("WEBP", "image/webp"),
    "png": ("PNG", "image/png"),
    "jpg": ("JPEG", "image/jpeg"),
    "jpeg": ("JPEG", "image/jpeg"),
}
DEFAULT_FORMAT = "webp"
DEFAULT_QUALITY = 80
DEFAULT_ASPECT_RATIO = "1:1"


def content_type(output_format: str) -> str:
    return FORMATS[output_format][1]


def dimensions(aspect_ratio: str, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side fixed; ``match_input_image`` has no image to match: 1:1."""
    if aspect_ratio not in ASPECT_RATIOS:
        aspect_ratio = DEFAULT_ASPECT_RATIO
    a, b = (int(part) for part in aspect_ratio.split(":"))
    if a >= b:
        return long_side, max(1, round(long_side * b / a))
    return max(1, round(long_side * a / b)), long_side


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


@functools.lru_cache(maxsize=64)
def render(prompt: str, seed: int, index: int, output_format: str, quality: int, width: int, height: int) -> bytes:
    """Encode one image; the same arguments always give the same picture (and the same bytes)."""
    from PIL import Image, ImageDraw, ImageFont

    # Seeding with a str is stable across processes (it is hashed with SHA-512, not hash()).
    rng = random.Random(f"{seed}:{index}:{prompt}")
    # A 2x2 picture stretched bilinearly is a cheap four-corner gradient.
    corners = Image.new("RGB", (2, 2))
    corners.putdata([_colour(rng) for _ in range(4)])
    img = corners.resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    for _ in range(rng.randint(3, 6)):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randint(max(2, short // 16), max(3, short // 4))
        box = (x - r, y - r, x + r, y + r)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=_colour(rng), outline=(255, 255, 255))
        else:
            draw.rectangle(box, fill=_colour(rng), outline=(0, 0, 0))
    words = " ".join(prompt.split()[:4])
    if words:
        font = ImageFont.load_default(size=max(8, height // 14))
        margin = max(2, short // 32)
        draw.text((margin + 1, margin + 1), words, fill=(0, 0, 0), font=font)
        draw.text((margin, margin), words, fill=(255, 255, 255), font=font)

    pil_format = FORMATS[output_format][0]
    buf = io.BytesIO()
    if pil_format == "PNG":
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format=pil_format, quality=quality)
    return buf.getvalue()


def data_uri(output_format: str, data: bytes) -> str:
    return f"data:{content_type(output_format)};base64,{base64.b64encode(data).decode('ascii')}"
