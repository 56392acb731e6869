"""Datasets, LR synthesis (MATLAB bicubic), crops and augmentation."""

from runtime.colour import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from runtime.imresize import imresize

from .datasets import (
    DATASETS_DIR,
    DatasetError,
    PairSample,
    TrainPatches,
    list_images,
    load_image,
    make_pair,
    modcrop,
    resolve_dataset,
    to_model_input,
)

__all__ = ["DATASETS_DIR", "DatasetError", "PairSample", "TrainPatches", "imresize",
           "list_images", "load_image", "make_pair", "modcrop", "resolve_dataset",
           "rgb_to_y", "rgb_to_ycbcr", "to_model_input", "ycbcr_to_rgb"]
