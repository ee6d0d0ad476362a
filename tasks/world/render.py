"""Procedural renders of coloured shapes (PIL): the images the sample world's alt texts describe."""

from __future__ import annotations

import io
import math
import random
import struct
import zlib

from PIL import Image, ImageDraw

from tasks.world.concepts import BACKGROUNDS, COLOURS, SIZES


def _regular(cx: float, cy: float, r: float, n: int, rot: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(rot + 2 * math.pi * k / n), cy + r * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]


def _star(cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rr = r if k % 2 == 0 else r * 0.42
        a = rot + math.pi * k / 5
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, rot: float,
               fill: tuple[int, int, int], bg: tuple[int, int, int]) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        ri = r * 0.55
        draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=bg)
    elif shape == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        ox, oy = cx + r * 0.45 * math.cos(rot), cy + r * 0.45 * math.sin(rot)
        draw.ellipse([ox - r * 0.85, oy - r * 0.85, ox + r * 0.85, oy + r * 0.85], fill=bg)
    elif shape == "square":
        draw.polygon(_regular(cx, cy, r, 4, rot + math.pi / 4), fill=fill)
    elif shape == "diamond":
        pts = _regular(cx, cy, r, 4, rot)
        pts = [(cx + (x - cx) * 0.6, y) if i % 2 == 0 else (x, y) for i, (x, y) in enumerate(pts)]
        draw.polygon(pts, fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular(cx, cy, r, 3, rot - math.pi / 2), fill=fill)
    elif shape == "pentagon":
        draw.polygon(_regular(cx, cy, r, 5, rot - math.pi / 2), fill=fill)
    elif shape == "hexagon":
        draw.polygon(_regular(cx, cy, r, 6, rot), fill=fill)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r, rot - math.pi / 2), fill=fill)
    elif shape == "cross":
        w = r * 0.36
        c, s = math.cos(rot), math.sin(rot)
        for (hx, hy) in ((r, w), (w, r)):
            corners = [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)]
            draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render(shape: str, colour: str, size: str, bg: str, rng: random.Random, px: int = 64) -> Image.Image:
    """One image: a `colour` `shape` of relative `size` on a `bg` background, jittered."""
    img = Image.new("RGB", (px, px), BACKGROUNDS[bg])
    draw = ImageDraw.Draw(img)
    r = px / 2 * SIZES[size] * rng.uniform(0.9, 1.0)
    slack = px / 2 - r
    cx = px / 2 + rng.uniform(-slack, slack) * 0.8
    cy = px / 2 + rng.uniform(-slack, slack) * 0.8
    jitter = tuple(max(0, min(255, v + rng.randint(-18, 18))) for v in COLOURS[colour])
    draw_shape(draw, shape, cx, cy, r, rng.uniform(0, 2 * math.pi) if shape not in ("square", "diamond", "cross") else rng.uniform(-0.3, 0.3), jitter, BACKGROUNDS[bg])
    return img


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        img.save(buf, "JPEG", quality=90)
    elif fmt == "png":
        img.save(buf, "PNG", optimize=False)
    elif fmt == "webp":
        img.save(buf, "WEBP", quality=90, method=0)
    else:
        raise ValueError(fmt)
    return buf.getvalue()


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A real decompression bomb: a 1-bit PNG whose pixels (width*height) inflate to gigabytes
    of RGB once decoded, in a file of a few tens of kilobytes."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
