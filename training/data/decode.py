"""Decode + crop one image into a uint8 array, and the decode worker process that does it in bulk.

Torch-free on purpose: a decode worker imports only Pillow and numpy, so it starts in a fraction
of a second and holds little memory (16 of them on a GPU machine's 16 cores).

    python -m training.data.decode FD     # started by training/data/pool.py, never by hand

Augmentation as CLIP trains: torchvision's RandomResizedCrop with scale (0.9, 1.0) and bicubic
resampling, driven by 10x4 uniforms per row that the loader draws from the row's position, so a
row's crop does not depend on which process decodes it, or when.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import signal
import sys

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def crop_from_uniforms(img: Image.Image, size: int, u: np.ndarray, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """torchvision's RandomResizedCrop (10 tries, then the centre) driven by 10x4 uniforms in
    [0, 1): area fraction, log aspect ratio, x and y of each try."""
    w, h = img.size
    area = w * h
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    for u0, u1, u2, u3 in u.tolist():
        target = area * (scale[0] + u0 * (scale[1] - scale[0]))
        ar = math.exp(lr0 + u1 * (lr1 - lr0))
        cw, ch = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(u2 * (w - cw + 1)), int(u3 * (h - ch + 1))
            return img.resize((size, size), Image.BICUBIC, box=(x, y, x + cw, y + ch))
    return center_resize(img, size)


def center_resize(img: Image.Image, size: int) -> Image.Image:
    """The evaluation transform's geometry, as open_clip and transformers' CLIPImageProcessor do it:
    the shortest side resized (bicubic) to `size`, the long side to int(size * long / short), then the
    centre size x size crop at ((long - size) // 2) (transformers' offset; torchvision rounds, which
    moves the crop by one pixel when long - size = 3 mod 4)."""
    w, h = img.size
    if (w, h) != (size, size):
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def decode_into(out_HW3: np.ndarray, data: bytes, u: np.ndarray | None) -> str | None:
    """Decode `data`, crop (random by `u`, or the centre when `u` is None) to out's size and write
    it into `out_HW3` (uint8). Returns None, or the exception's name for a bad record."""
    try:
        img = Image.open(io.BytesIO(data))
        size = out_HW3.shape[0]
        img = crop_from_uniforms(img, size, u) if u is not None else center_resize(img, size)
        out_HW3[...] = np.asarray(img.convert("RGB"))
        return None
    except Exception as e:  # noqa: BLE001 - a bad record is skipped and counted, never fatal
        return type(e).__name__


def _serve(fd: int) -> None:
    """The worker's loop: map the shared slots, then decode chunks into them until told to stop."""
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; we end at EOF
    conn = Connection(fd)
    hello = conn.recv()  # {"slots": [paths], "shape": (rows, size, size, 3)}
    shape = tuple(hello["shape"])
    views = []
    for path in hello["slots"]:
        with open(path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), int(np.prod(shape)))
        views.append(np.ndarray(shape, np.uint8, buffer=mm))
    conn.send("ready")  # the trainer may now unlink the slot files: we hold them mapped
    while True:
        try:
            msg = conn.recv()
            if msg is None:
                return
            chunk_id, slot, rows = msg  # rows: [(image bytes, uniforms or None)]
            out = views[slot]
            conn.send((chunk_id, [decode_into(out[i], data, u) for i, (data, u) in enumerate(rows)]))
        except (EOFError, OSError):  # the trainer closed the pool (or went away) while we decoded
            return


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _serve(int(sys.argv[1]))
