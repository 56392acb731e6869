"""Dataset folders, pairs, training patches."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edge_sr.data import (
    DatasetError,
    TrainPatches,
    load_image,
    make_pair,
    modcrop,
    resolve_dataset,
    to_model_input,
)


def test_modcrop():
    assert modcrop(np.zeros((13, 17, 3)), 4).shape == (12, 16, 3)


def test_pair_shapes_for_y_and_rgb():
    hr = np.random.default_rng(0).integers(0, 256, (31, 45, 3), dtype=np.uint8)
    y = make_pair(hr, 3, "y")
    assert y.hr.shape == (30, 45) and y.lr.shape == (10, 15) and y.lr.dtype == np.uint8
    rgb = make_pair(hr, 2, "rgb")
    assert rgb.hr.shape == (30, 44, 3) and rgb.lr.shape == (15, 22, 3)
    assert to_model_input(rgb.lr, "rgb").shape == (3, 15, 22)
    assert to_model_input(y.lr, "y").shape == (1, 10, 15)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DatasetError, match="set5"):
        resolve_dataset("set99")


def test_corrupt_image_is_a_one_line_error(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError) as err:
        load_image(bad)
    assert "\n" not in str(err.value)


def test_grayscale_images_load_as_rgb(tmp_path):
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (8, 8, 3)


def test_train_patches_are_aligned_and_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
    a = TrainPatches([str(tmp_path)], 2, "y", patch=32, seed=5)
    b = TrainPatches([str(tmp_path)], 2, "y", patch=32, seed=5)
    lr, hr = a.batch(4)
    lr2, hr2 = b.batch(4)
    assert lr.shape == (4, 1, 16, 16) and hr.shape == (4, 1, 32, 32)
    assert np.array_equal(lr, lr2) and np.array_equal(hr, hr2)
    # The LR patch is the (whole-image) bicubic downscale of the HR patch, up to borders.
    from edge_sr.data import imresize
    down = imresize(hr[0, 0].astype(np.float64), 0.5)
    assert np.abs(down[3:-3, 3:-3] - lr[0, 0, 3:-3, 3:-3]).max() < 0.02


def test_readme_is_not_a_dataset():
    with pytest.raises(DatasetError) as err:
        resolve_dataset("README.md")
    assert "README" not in str(err.value).split("one of")[1]


def _folder(path, sizes):
    rng = np.random.default_rng(0)
    path.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / f"{i:03}.png")
    return path


def test_holdout_splits_are_disjoint_and_cover_the_set(tmp_path):
    from edge_sr.data.datasets import HOLDOUT, list_images

    folder = _folder(tmp_path / "d", [(8, 8)] * (HOLDOUT + 5))
    train, val = list_images(f"{folder}:train"), list_images(f"{folder}:val")
    assert len(val) == HOLDOUT and len(train) == 5
    assert sorted(train + val) == list_images(folder) and not set(train) & set(val)


def test_patches_are_drawn_by_area(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "small.png")
    Image.fromarray(np.full((96, 96, 3), 255, np.uint8)).save(folder / "big.png")  # 9x area
    lr, _ = TrainPatches([str(folder)], 2, "y", patch=32, seed=0).batch(2000)
    big_share = (lr.mean(axis=(1, 2, 3)) > 0.5).mean()
    assert 0.87 < big_share < 0.93


def test_downscaled_copies_are_extra_images_bicubic_and_skipped_when_too_small(tmp_path):
    from edge_sr.data import imresize

    folder = _folder(tmp_path / "d", [(80, 90)])
    data = TrainPatches([str(folder)], 2, "y", patch=32, seed=0, downscales=(0.75, 0.3))
    assert len(data) == 2  # 0.3 x 80 = 24 rows: under the 32-pixel patch, left out
    hr_small = data.pairs[1][1][0]
    rgb = imresize(load_image(folder / "000.png"), 0.75)
    assert hr_small.shape == (60, 68)  # ceil(67.5) = 68 columns, modcropped to x2
    assert np.array_equal(hr_small, to_model_input(make_pair(rgb, 2, "y").hr, "y")[0])
    with pytest.raises(DatasetError, match="not in"):
        TrainPatches([str(folder)], 2, "y", patch=32, downscales=(1.5,))


def test_a_teachers_output_is_cut_and_augmented_with_its_hr_patch(tmp_path):
    folder = _folder(tmp_path / "d", [(80, 90), (64, 70)])
    data = TrainPatches([str(folder)], 2, "y", patch=32, seed=3)
    data.add_teacher(lambda lr: lr.repeat(2, axis=1).repeat(2, axis=2))  # nearest x2
    lr, hr = data.batch(64)  # flips and transposes commute with nearest upscaling
    assert hr.shape == (64, 2, 32, 32)
    assert np.array_equal(hr[:, 1:], lr.repeat(2, axis=2).repeat(2, axis=3))
    plain_lr, plain_hr = TrainPatches([str(folder)], 2, "y", patch=32, seed=3).batch(64)
    assert np.array_equal(hr[:, :1], plain_hr) and np.array_equal(lr, plain_lr)
