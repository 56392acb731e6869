"""Folders of HR images -> (HR, LR) pairs and random training patches. numpy + pillow only."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from runtime.colour import rgb_to_y
from runtime.imresize import imresize
from runtime.upscale import ImageError, check_size, open_image

IMAGE_EXTS = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}
# The checkout's sibling ``shared/datasets``; EDGE_SR_DATASETS overrides it.
DATASETS_DIR = Path(os.environ.get(
    "EDGE_SR_DATASETS", Path(__file__).resolve().parents[3] / "shared" / "datasets"))


class DatasetError(ValueError):
    """A missing dataset or an unreadable image, with a one-line message."""


# Training images held out for validation and checkpoint selection: the last
# HOLDOUT images (by name) of a dataset, named ``NAME:val``; ``NAME:train`` is the rest.
# Set5 and Set14 are test sets, reported only, never used to pick a checkpoint.
HOLDOUT = 20
SPLITS = ("train", "val")


def known_datasets() -> list[str]:
    """Dataset names under ``DATASETS_DIR``: its sub-folders that hold images."""
    if not DATASETS_DIR.is_dir():
        return []
    return sorted(p.name for p in DATASETS_DIR.iterdir()
                  if p.is_dir() and any(f.suffix.lower() in IMAGE_EXTS for f in p.iterdir()))


def _split(name: str | Path) -> tuple[str, str]:
    text = str(name)
    base, sep, split = text.rpartition(":")
    if sep and split in SPLITS and not Path(text).is_dir():
        return base, split
    return text, ""


def resolve_dataset(name: str | Path) -> Path:
    """A dataset name under ``DATASETS_DIR`` (e.g. ``set5``) or any folder of images.

    A ``:train`` / ``:val`` suffix (see ``HOLDOUT``) is accepted and ignored here.
    """
    base, _ = _split(name)
    path = Path(base)
    if path.is_dir():
        return path
    candidate = DATASETS_DIR / base.lower()
    if candidate.is_dir() and candidate.name in known_datasets():
        return candidate
    raise DatasetError(f"no dataset {base!r}: not a folder of images, and not one of "
                       f"{known_datasets() or 'nothing'} under {DATASETS_DIR}")


def list_images(folder: str | Path) -> list[Path]:
    """The image files of a dataset name or folder, sorted by name.

    ``NAME:val`` gives the last ``HOLDOUT`` images, ``NAME:train`` the others.
    """
    base, split = _split(folder)
    root = resolve_dataset(base)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {folder}")
    if split and len(files) <= HOLDOUT:
        raise DatasetError(f"{base} has {len(files)} images: too few to hold out {HOLDOUT}")
    if split == "val":
        return files[-HOLDOUT:]
    return files[:-HOLDOUT] if split == "train" else files


def load_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB (grayscale is replicated to three channels).

    Images over ``runtime.upscale.max_pixels()`` are refused from their header.
    """
    try:
        with open_image(path) as im:
            check_size(path, *im.size)
            return np.asarray(im.convert("RGB"))
    except ImageError as exc:
        raise DatasetError(str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop height and width down to multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


@dataclass
class PairSample:
    """One evaluation pair, uint8: HxW Y planes for Y models, HxWx3 RGB for RGB models."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


def make_pair(hr: np.ndarray, scale: int, colour: str = "rgb", name: str = "") -> PairSample:
    """Modcrop an RGB HR image and make its LR by MATLAB bicubic downscaling.

    For ``colour="y"`` the degradation runs on the uint8 Y plane, the convention behind
    the published bicubic/FSRCNN figures (it reproduces them to 0.02 dB on Set5); RGB
    models degrade in RGB.
    """
    hr = modcrop(hr, scale)
    if colour == "y":
        hr = np.clip(np.round(rgb_to_y(hr)), 0, 255).astype(np.uint8)
    return PairSample(name, hr, imresize(hr, 1.0 / scale))


def to_model_input(img_u8: np.ndarray, colour: str) -> np.ndarray:
    """uint8 image -> float32 CxHxW in [0, 1] (a Y plane, or RGB converted to Y, or RGB)."""
    if colour == "y":
        y = img_u8 if img_u8.ndim == 2 else np.round(rgb_to_y(img_u8))
        return (y / 255.0).astype(np.float32)[None]
    return (img_u8.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()


def _downscaled(img: np.ndarray, factors: tuple[float, ...]) -> list[np.ndarray]:
    """``img`` and its MATLAB-bicubic downscales by each factor (in (0, 1)), uint8."""
    # uint8 in, uint8 out (rounded as MATLAB)
    return [img, *(imresize(img, f) for f in factors)]


class TrainPatches:
    """Random aligned (LR, HR) patches with flips and 90-degree rotations.

    LR images are synthesized once per image (whole-image MATLAB bicubic, as at test
    time) and kept in memory; 291 training images take about 0.5 GB as float32 RGB.
    Images are drawn in proportion to their area, so every pixel is equally likely to be
    seen (uniform sampling would over-weight T91's small images).

    Args:
        folders: Dataset names, ``NAME:train`` splits, or folders (e.g.
            ``["t91", "bsd200:train"]``).
        scale: Upscaling factor.
        colour: ``"y"`` or ``"rgb"``.
        patch: HR patch size (rounded down to a multiple of ``scale``).
        seed: Seed of the sampling generator (training is deterministic given it).
        downscales: Extra copies of every HR image, bicubic-downscaled by these factors
            (FSRCNN's augmentation, e.g. ``(0.9, 0.8, 0.7, 0.6)``); each copy is an image
            of its own (degraded and sampled by area like the originals).
    """

    def __init__(self, folders: list[str], scale: int, colour: str, patch: int = 64,
                 seed: int = 0, downscales: tuple[float, ...] = ()):
        self.scale, self.patch = scale, patch - patch % scale
        self.rng = np.random.default_rng(seed)
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        bad = [f for f in downscales if not 0 < f < 1]
        if bad:  # before any image is read
            raise DatasetError(f"downscale factor {bad[0]} is not in (0, 1)")
        for folder in folders:
            for path in list_images(folder):
                for hr in _downscaled(load_image(path), downscales):
                    pair = make_pair(hr, scale, colour, path.stem)
                    if min(pair.lr.shape[:2]) * scale < self.patch:
                        continue
                    self.pairs.append((to_model_input(pair.lr, colour),
                                       to_model_input(pair.hr, colour)))
        if not self.pairs:
            raise DatasetError(f"no training image of {folders} is at least {self.patch} "
                               f"pixels on each side")
        area = np.array([lr.shape[1] * lr.shape[2] for lr, _ in self.pairs], dtype=np.float64)
        self.weights = area / area.sum()

    def __len__(self) -> int:
        return len(self.pairs)

    def add_teacher(self, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        """Carry a teacher's output with every HR image, as extra channels: the patches
        cut and augment it with the HR pixels they cover, at no cost per step.

        Args:
            predict: One (C, h, w) LR array -> the teacher's (C, h*scale, w*scale) output.
        """
        self.pairs = [(lr, np.concatenate([hr, predict(lr).astype(hr.dtype)]))
                      for lr, hr in self.pairs]

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``size`` random augmented patches: (N,C,p/s,p/s) LR, (N,C,p,p) HR (2C
        channels with a teacher: the HR patch, then the teacher's)."""
        lp, s = self.patch // self.scale, self.scale
        lrs, hrs = [], []
        for k in self.rng.choice(len(self.pairs), size=size, p=self.weights):
            lr, hr = self.pairs[k]
            i = int(self.rng.integers(lr.shape[1] - lp + 1))
            j = int(self.rng.integers(lr.shape[2] - lp + 1))
            lr_p = lr[:, i : i + lp, j : j + lp]
            hr_p = hr[:, i * s : (i + lp) * s, j * s : (j + lp) * s]
            flip_h, flip_v, rot = self.rng.integers(2, size=3)
            for axis, on in ((2, flip_h), (1, flip_v)):
                if on:
                    lr_p, hr_p = np.flip(lr_p, axis), np.flip(hr_p, axis)
            if rot:
                lr_p, hr_p = lr_p.transpose(0, 2, 1), hr_p.transpose(0, 2, 1)
            lrs.append(lr_p)
            hrs.append(hr_p)
        return np.ascontiguousarray(np.stack(lrs)), np.ascontiguousarray(np.stack(hrs))
