"""Where a build finds its tuning database."""

from __future__ import annotations

import pytest

from edge_sr.models import MODELS
from edge_sr.pipeline import BuildConfig
from edge_sr.pipeline.database import TUNING_DIR, tuning_dir


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_committed_database_is_the_models_own_or_the_one_it_shares(name):
    cfg = BuildConfig(model=name, target="host", size=(180, 320))
    owner = MODELS[name].kernels_of or name
    assert tuning_dir(cfg, "host") == TUNING_DIR / f"{owner}-host-180x320-float32"


def test_a_named_database_wins(tmp_path):
    cfg = BuildConfig(model="srresnet_b8_x4", target="host", size=(180, 320),
                      tuning_db=str(tmp_path))
    assert tuning_dir(cfg, "host") == tmp_path
