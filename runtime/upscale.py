"""Upscale an image on the device with a compiled artifact.

``python -m runtime.upscale IN.png -o OUT.png --artifact DIR``

Handles RGB, grayscale, RGBA/LA (alpha upscaled bicubically), palette, 16-bit PNG and
JPEG. Y-channel models run on luma with chroma upscaled bicubically; any image size runs
through the fixed-size module by overlapping tiles. Needs only the TVM runtime, numpy
and pillow.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .artifact import ArtifactError
from .colour import rgb_from_ycbcr_planes, ycbcr_planes
from .imresize import imresize


class ImageError(Exception):
    """An unreadable, corrupt, unsupported or too large image."""


# Input pixels accepted by default: a 16-megapixel photo upscaled x2 is held as about
# 1.5 GB of float planes, what a 4 GB board can spare. EDGE_SR_MAX_PIXELS or
# --max-pixels choose another limit (0: none).
DEFAULT_MAX_PIXELS = 16_000_000


def max_pixels() -> int:
    """The input pixel limit: ``EDGE_SR_MAX_PIXELS`` if set, else the default."""
    text = os.environ.get("EDGE_SR_MAX_PIXELS", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    if not text.isdigit():
        raise ImageError(f"EDGE_SR_MAX_PIXELS must be a whole number of pixels; got {text!r}")
    return int(text)


def check_size(path: str | Path, width: int, height: int, limit: int | None = None) -> None:
    """Refuse an image larger than ``limit`` pixels (default ``max_pixels()``; 0: none)."""
    limit = max_pixels() if limit is None else limit
    if limit and width * height > limit:
        raise ImageError(f"{path}: {width}x{height} is {width * height:,} pixels, over the "
                         f"limit of {limit:,} (--max-pixels or EDGE_SR_MAX_PIXELS to raise it)")


@dataclass
class Picture:
    """An image as float planes in [0, 1].

    Attributes:
        rgb: HxWx3 float (grayscale replicated): float64 as decoded, float32 as upscaled.
        alpha: HxW float, or None.
        gray: The source had no colour.
        bits: 8 or 16 (per channel).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    gray: bool
    bits: int


def read_picture(path: str | Path, limit: int | None = None) -> Picture:
    """Decode an image file into a ``Picture``; one-line ``ImageError`` on failure.

    Args:
        path: Image file.
        limit: Most pixels accepted (default ``max_pixels()``; 0: no limit). The header's
            size is checked before any pixel is decoded.
    """
    try:
        with open_image(path) as im:
            check_size(path, *im.size, limit)
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64) / 65535.0
                return Picture(np.repeat(arr[..., None], 3, 2), None, True, 16)
            if mode in ("L", "LA", "1"):
                arr = np.asarray(im.convert("LA"), dtype=np.float64) / 255.0
                alpha = arr[..., 1] if mode == "LA" else None
                return Picture(np.repeat(arr[..., :1], 3, 2), alpha, True, 8)
            if mode not in ("RGB", "RGBA", "CMYK", "YCbCr"):
                raise ImageError(f"{path}: unsupported image mode {mode}")
            arr = np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0
            alpha = arr[..., 3] if mode == "RGBA" else None
            return Picture(arr[..., :3], alpha, False, 8)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None


def open_image(path: str | Path) -> Image.Image:
    """``Image.open`` without PIL's own decompression-bomb refusal (``check_size`` is
    ours, with a limit the user can set)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        return Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def write_picture(pic: Picture, path: str | Path) -> None:
    """Encode a ``Picture`` by file extension, atomically (temp file + rename)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"):
        raise ImageError(f"{path}: unsupported output format {ext or '(none)'}")
    if pic.gray and pic.bits == 16 and ext == ".png" and pic.alpha is None:
        data = np.round(np.clip(pic.rgb[..., 0], 0, 1) * 65535).astype(np.uint16)
        im = Image.fromarray(data)
    else:
        u8 = to_uint8(pic)
        keep_alpha = pic.alpha is not None and ext not in (".jpg", ".jpeg", ".bmp")
        if pic.alpha is not None and not keep_alpha:
            print(f"runtime.upscale: {ext} has no alpha channel; alpha dropped", file=sys.stderr)
        if keep_alpha:
            a = np.round(np.clip(pic.alpha, 0, 1) * 255).astype(np.uint8)
            u8 = np.dstack([u8, a])
        im = Image.fromarray(u8)
    tmp = path.with_name(f".{path.name}.tmp{ext}")
    try:
        im.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Prepared:
    """A picture made ready for the module: what runs on it, and what does not.

    Attributes:
        planes: The module's input, CxHxW float32 on [0, 1] (Y models: luma only).
        chroma: Cb and Cr already upscaled (2 x sH x sW float32, 0-255 scale) for Y
            models, else None.
        alpha: Alpha already upscaled, or None.
    """

    planes: np.ndarray
    chroma: np.ndarray | None
    alpha: np.ndarray | None


def prepare_picture(pic: Picture, scale: int, colour: str) -> Prepared:
    """The work before the module: colour conversion, chroma and alpha upscaling.

    In float32, plane by plane (a video frame's budget is the module's time; float32
    keeps 16-bit pixels exact to a hundredth of a level)."""
    alpha = None if pic.alpha is None else \
        np.clip(imresize(pic.alpha, scale, np.float32), 0, 1)
    if colour == "y":
        y, cb, cr = ycbcr_planes(pic.rgb)
        y /= np.float32(255.0)
        return Prepared(y[None], np.stack([imresize(c, scale, np.float32) for c in (cb, cr)]),
                        alpha)
    return Prepared(pic.rgb.transpose(2, 0, 1).astype(np.float32), None, alpha)


def finish_picture(pic: Picture, prep: Prepared, out: np.ndarray) -> Picture:
    """The work after the module: its output (CxsHxsW float32) back into a ``Picture``
    (float32, clipped to [0, 1]) with ``pic``'s kind (grayscale, bit depth)."""
    if prep.chroma is not None:
        rgb = rgb_from_ycbcr_planes(out[0] * np.float32(255.0), *prep.chroma)
    else:
        rgb = out.transpose(1, 2, 0)
        if pic.gray:
            rgb = np.repeat(rgb.mean(2, keepdims=True), 3, 2)
        rgb = np.clip(rgb, 0, 1)
    return Picture(rgb, prep.alpha, pic.gray, pic.bits)


def upscale_picture(pic: Picture, engine, progress=None) -> Picture:
    """Super-resolve a picture with an engine (see ``runtime.engine.Engine``)."""
    scale, colour = int(engine.manifest["scale"]), engine.manifest["colour"]
    prep = prepare_picture(pic, scale, colour)
    return finish_picture(pic, prep, engine.upscale(prep.planes, progress))


def to_uint8(pic: Picture) -> np.ndarray:
    """HxWx3 (HxW for grayscale) uint8 pixels of a ``Picture``, as ``write_picture``
    stores an 8-bit image."""
    u8 = np.clip(pic.rgb, 0, 1) * pic.rgb.dtype.type(255)
    u8 = np.round(u8, out=u8).astype(np.uint8)
    return u8[..., 0] if pic.gray else u8


def text_progress(items: list, label: str = "tiles") -> Iterable:
    """A dependency-free progress line on stderr (shown only for more than one step)."""
    n = len(items)
    start = time.time()
    for i, item in enumerate(items, 1):
        yield item
        if n > 1:
            rate = i / max(time.time() - start, 1e-9)
            end = "\n" if i == n else ""
            print(f"\r{label} {i}/{n} ({rate:.1f}/s)", end=end, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.upscale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="image to upscale")
    parser.add_argument("-o", "--output", required=True, help="output image (format by extension)")
    parser.add_argument("--artifact", required=True,
                        help="artifact folder (manifest.json + library)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="largest input accepted, in pixels (default EDGE_SR_MAX_PIXELS "
                        f"or {DEFAULT_MAX_PIXELS:,}; 0: no limit)")
    args = parser.parse_args(argv)
    from .engine import load_local

    try:
        pic = read_picture(args.input, args.max_pixels)
        engine = load_local(args.artifact)
        start = time.time()
        out = upscale_picture(pic, engine, None if args.quiet else text_progress)
        write_picture(out, args.output)
    except (ImageError, ArtifactError) as exc:
        print(f"runtime.upscale: error: {exc}", file=sys.stderr)
        return 2
    h, w = out.rgb.shape[:2]
    print(f"runtime.upscale: wrote {args.output} ({w}x{h}) in {time.time() - start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
