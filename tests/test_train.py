"""Training: recipes, determinism, resume, schedule checks, logging, export, adversarial."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from edge_sr.models import MODELS
from edge_sr.train import LOG_FIELDS, TrainConfig, TrainError, lr_at, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for i in range(4):
        img = rng.integers(0, 256, (64, 72, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"{i}.png")
    return str(root)


def _cfg(tmp_path, data, name, **kw) -> TrainConfig:
    base = dict(model="fsrcnn_tiny_x2", iters=6, batch=2, lr_patch=16, val_every=3, warmup=2,
                compile=False,
                datasets=[data], val_dataset=data, out=str(tmp_path / name),
                export=str(tmp_path / f"{name}.pt"))
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_same_seed_same_weights(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "a"))
    train(_cfg(tmp_path, tiny_data, "b"))
    wa, wb = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_exactly(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "straight"))
    first = train(_cfg(tmp_path, tiny_data, "resumed", stop_after=4))  # "interrupted"
    assert first["iter"] == 4 and not first["done"]
    train(_cfg(tmp_path, tiny_data, "resumed"))  # picks up resumed/last.pt
    ws, wr = _weights(tmp_path / "straight.pt"), _weights(tmp_path / "resumed.pt")
    assert all(torch.allclose(ws[k], wr[k]) for k in ws)
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "log.csv")))
    assert [int(r["iter"]) for r in rows] == [3, 6]


def test_log_has_loss_and_validation(tmp_path, tiny_data):
    result = train(_cfg(tmp_path, tiny_data, "log"))
    rows = list(csv.DictReader(open(result["log"])))
    assert list(rows[0]) == LOG_FIELDS
    assert all(float(r["val_psnr"]) > 0 for r in rows)


def test_adversarial_fine_tuning_trains_both_networks(tmp_path, tiny_data):
    kw = dict(model="srresnet_b2_x4", iters=2, val_every=2)
    result = train(_cfg(tmp_path, tiny_data, "gan", adversarial=True, **kw))
    train(_cfg(tmp_path, tiny_data, "plain", **kw))
    state = torch.load(tmp_path / "gan" / "last.pt", weights_only=False)
    # the discriminator took a step per iteration, and its verdict moved the generator
    assert {int(v["step"]) for v in state["opt_d"]["state"].values()} == {2}
    gan, plain = _weights(tmp_path / "gan.pt"), _weights(tmp_path / "plain.pt")
    assert any(not torch.equal(gan[k], plain[k]) for k in gan)
    assert np.isfinite(result["val"]["psnr"])


def test_adversarial_needs_rgb(tmp_path, tiny_data):
    with pytest.raises(TrainError, match="RGB"):
        train(_cfg(tmp_path, tiny_data, "bad", adversarial=True))


def test_resume_refuses_another_schedule_in_one_line(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "run", stop_after=3))
    with pytest.raises(TrainError) as err:
        train(_cfg(tmp_path, tiny_data, "run", iters=12))
    assert "iters=6" in str(err.value) and "\n" not in str(err.value)


def test_downscales_are_part_of_the_schedule_only_when_used(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "aug", stop_after=3, downscales=[0.9]))
    with pytest.raises(TrainError, match=r"downscales=\[0.9\]"):
        train(_cfg(tmp_path, tiny_data, "aug"))
    train(_cfg(tmp_path, tiny_data, "plain", stop_after=3))
    # runs stored before the field existed carry no key, and still resume
    assert "downscales" not in json.loads((tmp_path / "plain" / "recipe.json").read_text())


def test_an_mse_run_trains_other_weights_and_keeps_its_loss_in_the_schedule(tmp_path,
                                                                           tiny_data):
    train(_cfg(tmp_path, tiny_data, "l1"))
    train(_cfg(tmp_path, tiny_data, "mse", loss="mse", stop_after=3))
    assert "loss" not in json.loads((tmp_path / "l1" / "recipe.json").read_text())
    assert json.loads((tmp_path / "mse" / "recipe.json").read_text())["loss"] == "mse"
    with pytest.raises(TrainError, match="loss='mse'"):  # resumed with the recipe's L1
        train(_cfg(tmp_path, tiny_data, "mse"))
    train(_cfg(tmp_path, tiny_data, "mse", loss="mse"))
    w1, w2 = _weights(tmp_path / "l1.pt"), _weights(tmp_path / "mse.pt")
    assert not all(torch.equal(w1[k], w2[k]) for k in w1)


def test_an_unknown_loss_is_refused_in_one_line(tmp_path, tiny_data):
    with pytest.raises(TrainError, match="unknown loss 'l3'; expected one of l1, mse"):
        train(_cfg(tmp_path, tiny_data, "bad", loss="l3"))


def test_a_slow_average_exports_the_weights_it_started_from(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "start", iters=3))
    start = _weights(tmp_path / "start.pt")
    train(_cfg(tmp_path, tiny_data, "avg", init=str(tmp_path / "start.pt"), ema=1 - 1e-9))
    trained = torch.load(tmp_path / "avg" / "last.pt", weights_only=False)["model"]
    averaged = _weights(tmp_path / "avg.pt")
    assert all(torch.allclose(averaged[k], start[k], atol=1e-6) for k in start)
    assert not all(torch.allclose(trained[k], start[k], atol=1e-6) for k in start)


def test_an_averaged_run_resumes_exactly_and_keeps_its_decay_in_the_schedule(tmp_path,
                                                                             tiny_data):
    train(_cfg(tmp_path, tiny_data, "straight", ema=0.5))
    train(_cfg(tmp_path, tiny_data, "resumed", ema=0.5, stop_after=4))
    with pytest.raises(TrainError, match="ema=0.5"):
        train(_cfg(tmp_path, tiny_data, "resumed"))
    train(_cfg(tmp_path, tiny_data, "resumed", ema=0.5))
    ws, wr = _weights(tmp_path / "straight.pt"), _weights(tmp_path / "resumed.pt")
    assert all(torch.allclose(ws[k], wr[k]) for k in ws)
    plain = train(_cfg(tmp_path, tiny_data, "plain"))
    assert plain["iter"] == 6
    wp = _weights(tmp_path / "plain.pt")
    assert not all(torch.allclose(ws[k], wp[k]) for k in ws)


@pytest.mark.parametrize("kw, match", [({"ema": 1.0}, r"ema: expected a decay in \[0, 1\)"),
                                       ({"ema": 0.9, "qat": True}, "not --qat")])
def test_a_wrong_average_is_refused_in_one_line(tmp_path, tiny_data, kw, match):
    with pytest.raises(TrainError, match=match):
        train(_cfg(tmp_path, tiny_data, "bad", **kw))


def test_finish_fine_tunes_given_weights_in_float32_with_downscaled_copies(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "main", model="fsrcnn_x2", iters=3))
    train(_cfg(tmp_path, tiny_data, "fin", model="fsrcnn_x2", iters=3, finish=True,
               init=str(tmp_path / "main.pt")))
    rec = json.loads((tmp_path / "fin" / "recipe.json").read_text())
    finish = MODELS["fsrcnn_x2"].recipe.finish
    assert rec["downscales"] == list(finish.downscales) and rec["lr"] == finish.lr
    assert rec["bf16"] is False and rec["iters"] == 3
    main = torch.load(tmp_path / "main.pt", weights_only=True)
    fin = torch.load(tmp_path / "fin.pt", weights_only=True)
    # it started from main.pt, and its cost counts main's steps and seconds
    assert fin["prior"] == {"iter": main["iter"], "elapsed_s": main["elapsed_s"]}
    with pytest.raises(TrainError, match="no finishing"):
        train(_cfg(tmp_path, tiny_data, "none", finish=True, init=str(tmp_path / "main.pt")))


def test_lr_mult_override_replaces_the_recipes_and_is_part_of_the_schedule(tmp_path, tiny_data):
    spec = MODELS["fsrcnn_x2"]
    assert spec.recipe.lr_mult == (("deconv", 0.1),)
    rec = TrainConfig(model="fsrcnn_x2", lr_mult=["deconv=1"]).recipe(spec)
    assert rec.lr_mult == (("deconv", 1.0),)
    assert TrainConfig(model="fsrcnn_x2", lr_mult=[]).recipe(spec).lr_mult == ()
    kw = dict(model="fsrcnn_x2", iters=6, stop_after=3)
    train(_cfg(tmp_path, tiny_data, "mult", lr_mult=["deconv=1"], **kw))
    stored = json.loads((tmp_path / "mult" / "recipe.json").read_text())
    assert stored["lr_mult"] == [["deconv", 1.0]]
    with pytest.raises(TrainError, match="lr_mult"):  # the recipe's 0.1 is another schedule
        train(_cfg(tmp_path, tiny_data, "mult", **kw))


@pytest.mark.parametrize("name", [n for n, s in MODELS.items() if s.recipe.finish])
def test_every_finish_is_a_float32_fine_tune_of_the_model_itself(name):
    rec = MODELS[name].recipe
    fin = rec.finish_recipe()
    assert not fin.bf16 and not fin.init and fin.finish is None
    assert fin.iters == rec.finish.iters and fin.lr < rec.lr and fin.lr_patch >= rec.lr_patch


def test_zoo_finishes_a_complete_schedule_once(tmp_path):
    from edge_sr.train_zoo import _ready

    def done(folder, step, iters):
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"iter": step, "schedule": {"iters": iters}}, folder / "last.pt")

    done(tmp_path / "fsrcnn_x2", 149_000, 150_000)
    assert _ready(tmp_path, "fsrcnn_x2")  # its schedule first
    done(tmp_path / "fsrcnn_x2", 150_000, 150_000)
    assert _ready(tmp_path, "fsrcnn_x2")  # then its finishing fine-tune
    fin = MODELS["fsrcnn_x2"].recipe.finish.iters
    done(tmp_path / "fsrcnn_x2" / "finish", fin, fin)
    assert not _ready(tmp_path, "fsrcnn_x2")
    done(tmp_path / "fsrcnn_tiny_x2", 60_000, 60_000)  # a recipe without one
    assert not _ready(tmp_path, "fsrcnn_tiny_x2")


def test_export_only_when_it_beats_the_file_on_validation(tmp_path, tiny_data):
    path = tmp_path / "w.pt"
    result = train(_cfg(tmp_path, tiny_data, "a", export=str(path)))
    assert result["weights"] == str(path)
    first = path.read_bytes()
    worse = train(_cfg(tmp_path, tiny_data, "b", export=str(path), iters=3, val_every=3,
                       lr=1e-9))  # a near-untrained model cannot beat it
    assert worse["weights"] is None and path.read_bytes() == first
    assert torch.load(tmp_path / "b" / "best.pt", weights_only=True)["iter"] == 3


def test_warmup_then_cosine_to_the_final_rate():
    rec = MODELS["fsrcnn_x2"].recipe
    assert lr_at(rec, 0) == pytest.approx(rec.lr / rec.warmup)
    assert lr_at(rec, rec.warmup - 1) == pytest.approx(rec.lr)
    assert lr_at(rec, rec.iters) == pytest.approx(rec.lr * rec.final_lr)
    steps = range(rec.warmup, rec.iters, 997)
    assert all(lr_at(rec, a) >= lr_at(rec, b) for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_a_recipe_whose_patches_fit_the_data(name):
    spec = MODELS[name]
    rec = spec.recipe
    assert rec.iters >= 10_000 and rec.lr_patch * spec.scale <= 200  # BSD: 321 px sides
    assert not rec.init or rec.init in MODELS
    if rec.teacher:  # a teacher of the same kind, so that its output is a target
        teacher = MODELS[rec.teacher]
        assert (teacher.scale, teacher.colour) == (spec.scale, spec.colour)


def test_a_recipes_teacher_and_seed_are_defaults_a_run_can_override():
    spec = MODELS["ecbsr_m4c16_x2"]
    rec = TrainConfig(model=spec.name).recipe(spec)
    assert (rec.teacher, rec.teacher_x8, rec.seed) == ("edsrlite_x2", True, 11)
    untaught = TrainConfig(model=spec.name, teacher="", seed=0).recipe(spec)
    assert (untaught.teacher, untaught.seed) == ("", 0)
    other = TrainConfig(model=spec.name, teacher="fsrcnn_x2").recipe(spec)
    assert (other.teacher, other.teacher_x8) == ("fsrcnn_x2", False)  # one pass unless asked
    qat = TrainConfig(model=spec.name, qat=True).recipe(spec)  # float training's, not QAT's
    assert (qat.teacher, qat.teacher_x8, qat.ema) == ("", False, 0.0)
    fin = replace(MODELS["fsrcnn_x2"].recipe, teacher="edsrlite_x2").finish_recipe()
    assert (fin.teacher, fin.teacher_x8) == ("", False)


def test_fsrcnn_deconvolution_learns_at_a_tenth_of_the_rate():
    from edge_sr.train import _param_groups

    model = MODELS["fsrcnn_x2"].factory()
    groups = _param_groups(model, MODELS["fsrcnn_x2"].recipe)
    by_mult = {g["lr_mult"]: {id(p) for p in g["params"]} for g in groups}
    assert by_mult[0.1] == {id(model.deconv.weight), id(model.deconv.bias)}
    assert len(by_mult[1.0]) == len(list(model.parameters())) - 2


def test_pruned_srresnet_starts_from_the_committed_16_blocks(tmp_path, tiny_data):
    from edge_sr.train_init import init_from

    spec = MODELS["srresnet_b4_x4"]
    src = MODELS["srresnet_b16_x4"].factory()
    torch.save({"state_dict": src.state_dict()}, tmp_path / "b16.pt")
    model = init_from(spec.factory(), spec, spec.recipe, str(tmp_path / "b16.pt"))
    assert len(model.body) == 4
    assert torch.equal(model.head[0].weight, src.head[0].weight)
    assert torch.equal(model.body[-1].body[0].conv.weight, src.body[-1].body[0].conv.weight)


def test_zoo_runs_wait_for_their_source(tmp_path):
    from edge_sr.train_zoo import _ready

    assert _ready(tmp_path, "fsrcnn_x2") and not _ready(tmp_path, "fsrcnn_x3")
    (tmp_path / "fsrcnn_x2").mkdir()
    iters = MODELS["fsrcnn_x2"].recipe.iters
    torch.save({"iter": iters, "schedule": {"iters": iters}},
               tmp_path / "fsrcnn_x2" / "last.pt")
    assert _ready(tmp_path, "fsrcnn_x3")
    fin = MODELS["fsrcnn_x2"].recipe.finish.iters  # x2 itself goes on to its finish
    (tmp_path / "fsrcnn_x2" / "finish").mkdir()
    torch.save({"iter": fin, "schedule": {"iters": fin}},
               tmp_path / "fsrcnn_x2" / "finish" / "last.pt")
    assert not _ready(tmp_path, "fsrcnn_x2") and _ready(tmp_path, "fsrcnn_x3")


def test_zoo_taught_runs_wait_for_their_teacher(tmp_path):
    from edge_sr.train_zoo import _ready, sources

    assert sources("ecbsr_m4c16_x2") == ["edsrlite_x2"]
    (tmp_path / "edsrlite_x2").mkdir()
    iters = MODELS["edsrlite_x2"].recipe.iters
    torch.save({"iter": 1000, "schedule": {"iters": iters}}, tmp_path / "edsrlite_x2" / "last.pt")
    assert not _ready(tmp_path, "ecbsr_m4c16_x2")
    assert _ready(tmp_path, "ecbsr_m4c16_x2", early=True)  # the committed teacher
    torch.save({"iter": iters, "schedule": {"iters": iters}}, tmp_path / "edsrlite_x2" / "last.pt")
    assert _ready(tmp_path, "ecbsr_m4c16_x2")


def test_the_zoo_trains_every_source_before_the_models_that_need_it():
    from edge_sr.train_zoo import ZOO, sources

    for i, name in enumerate(ZOO):
        assert set(sources(name)) <= set(ZOO[:i]), name


def test_early_runs_start_from_an_unfinished_source_and_say_where_it_stood(tmp_path):
    from edge_sr.train_zoo import _ready, note_source

    src = tmp_path / "srresnet_b16_x4"
    src.mkdir()
    torch.save({"iter": 1234, "schedule": {"iters": 40000}}, src / "last.pt")
    assert not _ready(tmp_path, "srresnet_b2_x4")
    assert _ready(tmp_path, "srresnet_b2_x4", early=True)  # the committed b16 weights
    note_source(tmp_path, "srresnet_b2_x4")
    stood = json.loads((tmp_path / "srresnet_b2_x4" / "source.json").read_text())
    committed = torch.load(MODELS["srresnet_b16_x4"].weights_path, weights_only=False)
    assert stood == {"model": "srresnet_b16_x4", "iter": 1234, "iters": 40000,
                     "weights_iter": committed["iter"]}  # what the run starts from


def test_training_time_leaves_out_pauses(monkeypatch):
    from edge_sr import train as train_mod

    now = [1000.0]
    monkeypatch.setattr(train_mod.time, "time", lambda: now[0])
    clock = train_mod._Clock(50.0)
    for gap in (0.5, 2.0, 3600.0, 1.5):  # the hour: a SIGSTOP while something was timed
        now[0] += gap
        clock.tick()
    assert clock.total == pytest.approx(54.0)


@pytest.mark.slow
def test_zoo_runs_train_side_by_side(tmp_path):
    from edge_sr.train_zoo import ZooTrainConfig, run_state, train_zoo

    names = ["fsrcnn_tiny_x2", "fsrcnn_s_x2"]
    t0 = time.time()
    report = train_zoo(ZooTrainConfig(models=names, minutes=0.6, runs=str(tmp_path / "runs"),
                                      weights=str(tmp_path / "w"), threads=1, jobs=2))
    assert set(report) == set(names)
    ends = []
    for name in names:
        assert run_state(tmp_path / "runs", name)[0] == report[name]["iter"] > 0
        ends.append((tmp_path / "runs" / name / "last.pt").stat().st_mtime)
    # side by side, both run to the end of the budget (one after the other, the first
    # would stop halfway)
    assert abs(ends[0] - ends[1]) < 8
    assert time.time() - t0 < 0.6 * 60 + 60


def test_bf16_training_keeps_the_output_layer_in_float32():
    from edge_sr.train import keep_float32, output_layer

    model = MODELS["ecbsr_m4c8_x2"].factory()
    layer = output_layer(model)
    assert layer is model.backbone[-1]
    keep_float32(layer, "cpu")
    x = torch.rand(1, 1, 12, 12)
    with torch.autocast("cpu", torch.bfloat16):
        assert model.backbone[:-1](x).dtype == torch.bfloat16
        assert model(x).dtype == torch.float32
    import copy

    twin = copy.deepcopy(model)  # a copy's float32 layer computes with its own weights
    with torch.no_grad():
        output_layer(twin).conv3x3.bias.add_(1.0)
    assert not torch.allclose(twin(x), model(x))


@pytest.mark.slow
def test_compiled_training_follows_the_eager_one(tmp_path, tiny_data):
    eager = train(_cfg(tmp_path, tiny_data, "eager", bf16=False))
    compiled = train(_cfg(tmp_path, tiny_data, "compiled", bf16=False, compile=True))
    we, wc = _weights(tmp_path / "eager.pt"), _weights(tmp_path / "compiled.pt")
    assert all(torch.allclose(we[k], wc[k], atol=1e-4) for k in we)
    assert compiled["best_psnr"] == pytest.approx(eager["best_psnr"], abs=0.05)


@pytest.mark.slow
def test_sigterm_stops_a_background_run_with_a_checkpoint(tmp_path, tiny_data):
    import signal
    import subprocess
    import sys
    import time

    script = (f"from edge_sr.train import TrainConfig, train\n"
              f"train(TrainConfig(model='fsrcnn_tiny_x2', iters=10**6, batch=2, lr_patch=16, "
              f"val_every=10**5, datasets=[{tiny_data!r}], val_dataset={tiny_data!r}, "
              f"out={str(tmp_path / 'run')!r}, export={str(tmp_path / 'w.pt')!r}, "
              f"compile=False, bf16=False))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    seen, deadline = "", time.time() + 120
    while "fsrcnn_tiny_x2" not in seen and proc.poll() is None and time.time() < deadline:
        seen += proc.stderr.read(100)  # until the progress bar shows: the loop runs
    assert proc.poll() is None, seen[-500:]
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["iter"] > 0 and state["schedule"]["iters"] == 10**6


def test_qat_fine_tunes_on_a_short_low_rate_schedule_by_default():
    spec = MODELS["fsrcnn_x2"]
    rec = TrainConfig(model="fsrcnn_x2", qat=True).recipe(spec)
    assert (rec.iters, rec.lr, rec.warmup, rec.bf16) == (2000, 1e-4, 0, False)
    assert TrainConfig(model="fsrcnn_x2", qat=True, lr=5e-5).recipe(spec).lr == 5e-5


def test_fsrcnn_x3_takes_x2s_feature_layers_and_a_new_deconvolution(tmp_path):
    from edge_sr.train_init import init_from

    torch.manual_seed(0)
    src = MODELS["fsrcnn_x2"].factory()
    torch.nn.init.normal_(src.deconv.weight)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "x2.pt")
    spec = MODELS["fsrcnn_x3"]
    model = init_from(spec.factory(), spec, spec.recipe, str(tmp_path / "x2.pt"))
    assert all(torch.equal(a, b) for a, b in zip(model.body.parameters(), src.body.parameters()))
    assert not torch.equal(model.deconv.weight, src.deconv.weight)


def test_fsrcnn_x4_fine_tunes_from_its_own_weights_not_x2s_transfer(tmp_path):
    from edge_sr.train_init import init_from

    torch.manual_seed(0)
    spec = MODELS["fsrcnn_x4"]
    own = spec.factory()
    torch.nn.init.normal_(own.deconv.weight)
    # fsrcnn_x4's weights also fit fsrcnn_x2 (the recipe's source): the recorded name decides
    torch.save({"state_dict": own.state_dict(), "model": "fsrcnn_x4"}, tmp_path / "x4.pt")
    model = init_from(spec.factory(), spec, spec.recipe, str(tmp_path / "x4.pt"))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), own.parameters()))


def test_ghost_route_trains_from_a_plain_model_and_resumes(tmp_path, tiny_data):
    torch.manual_seed(0)
    torch.save({"state_dict": MODELS["edsrlite_x2"].factory().state_dict()},
               tmp_path / "plain.pt")
    cfg = dict(model="ghostsr_km_x2", iters=4, val_every=2, init=str(tmp_path / "plain.pt"))
    first = train(_cfg(tmp_path, tiny_data, "km", stop_after=2, **cfg))
    assert first["iter"] == 2
    done = train(_cfg(tmp_path, tiny_data, "km", **cfg))  # resumes the converted model
    assert done["done"] and np.isfinite(done["best_psnr"])


def test_a_run_from_the_models_own_checkpoint_counts_its_cost(tmp_path, tiny_data,
                                                               monkeypatch):
    import edge_sr.models as models

    train(_cfg(tmp_path, tiny_data, "main", iters=3))
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)  # main.pt as the committed one
    (tmp_path / "fsrcnn_tiny_x2.pt").write_bytes((tmp_path / "main.pt").read_bytes())
    train(_cfg(tmp_path, tiny_data, "again", iters=3, init=str(tmp_path / "fsrcnn_tiny_x2.pt")))
    main = torch.load(tmp_path / "main.pt", weights_only=True)
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert again["prior"] == {"iter": main["iter"], "elapsed_s": main["elapsed_s"]}
    # a run folder's export of the same model counts as well
    train(_cfg(tmp_path, tiny_data, "run", iters=3, init=str(tmp_path / "main.pt")))
    run = torch.load(tmp_path / "run.pt", weights_only=True)
    assert run["prior"] == {"iter": main["iter"], "elapsed_s": main["elapsed_s"]}
    # another model's weights (a transfer, e.g. x3 from x2's): its own cost only
    torch.save({**main, "model": "fsrcnn_x2"}, tmp_path / "x2.pt")
    train(_cfg(tmp_path, tiny_data, "other", iters=3, init=str(tmp_path / "x2.pt")))
    assert "prior" not in torch.load(tmp_path / "other.pt", weights_only=True)


def test_a_teacher_is_a_second_target_recorded_in_the_schedule(tmp_path, tiny_data):
    train(_cfg(tmp_path, tiny_data, "alone"))
    train(_cfg(tmp_path, tiny_data, "taught", teacher="fsrcnn_x2", distill=2.0))
    wa, wt = _weights(tmp_path / "alone.pt"), _weights(tmp_path / "taught.pt")
    assert not all(torch.equal(wa[k], wt[k]) for k in wa)
    recipe = json.loads((tmp_path / "taught" / "recipe.json").read_text())
    assert (recipe["teacher"], recipe["distill"]) == ("fsrcnn_x2", 2.0)
    assert "teacher" not in json.loads((tmp_path / "alone" / "recipe.json").read_text())
    with pytest.raises(TrainError, match="follows another schedule"):  # another weight
        train(_cfg(tmp_path, tiny_data, "taught", teacher="fsrcnn_x2", iters=6, distill=1.0))
    # the self-ensembled teacher is another target: recorded, and another schedule
    train(_cfg(tmp_path, tiny_data, "x8", teacher="fsrcnn_x2", distill=2.0, teacher_x8=True))
    assert json.loads((tmp_path / "x8" / "recipe.json").read_text())["teacher_x8"] is True
    assert not all(torch.equal(wt[k], v) for k, v in _weights(tmp_path / "x8.pt").items())
    with pytest.raises(TrainError, match="follows another schedule"):
        train(_cfg(tmp_path, tiny_data, "taught", teacher="fsrcnn_x2", distill=2.0,
                   teacher_x8=True))


def test_a_complete_taught_run_does_not_compute_its_teacher(tmp_path, tiny_data,
                                                            monkeypatch):
    import edge_sr.train as train_mod

    cfg = dict(teacher="fsrcnn_x2", teacher_x8=True)
    train(_cfg(tmp_path, tiny_data, "taught", **cfg))
    train(_cfg(tmp_path, tiny_data, "half", stop_after=3, **cfg))

    def refuse(*_args):
        raise AssertionError("a complete run computed its teacher's outputs")

    monkeypatch.setattr(train_mod, "_teacher", refuse)
    again = train(_cfg(tmp_path, tiny_data, "taught", **cfg))
    assert again["done"] and again["iter"] == 6
    with pytest.raises(AssertionError, match="computed"):  # an unfinished one still does
        train(_cfg(tmp_path, tiny_data, "half", **cfg))


@pytest.mark.parametrize("kw, match", [({"teacher": "fsrcnn_x3"}, "is x3 y"),
                                       ({"teacher": "srresnet_b2_x4"}, "is x4 rgb"),
                                       ({"teacher": "nope"}, "--teacher nope"),
                                       ({"teacher": "fsrcnn_x2", "qat": True}, "float training"),
                                       ({"teacher_x8": True}, "needs --teacher")])
def test_a_teacher_of_another_kind_is_refused_in_one_line(tmp_path, tiny_data, kw, match):
    with pytest.raises(TrainError, match=match) as err:
        train(_cfg(tmp_path, tiny_data, "bad", **kw))
    assert "\n" not in str(err.value)
