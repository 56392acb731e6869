"""The CLI's answer to bad input: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import pytest

from edge_sr.cli import main


@pytest.mark.parametrize("argv,needle", [
    (["build", "--target", "host", "--size", "100000x100000"], "1..4096 per side"),
    (["eval", "--model", "fsrcnn_tiny_x2", "--dataset", "README.md"], "no dataset"),
    (["train", "--model", "fsrcnn_tiny_x2", "--iters", "0"], "must be >= 1"),
    (["train", "--model", "fsrcnn_tiny_x2", "--lr-mult", "deconv"], "NAME=F with F > 0"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not any(tmp_path.iterdir())


def test_eval_names_only_real_datasets(capsys):
    main(["eval", "--model", "fsrcnn_tiny_x2", "--dataset", "README.md"])
    listed = capsys.readouterr().err.split("one of")[1]
    assert "set5" in listed and "README" not in listed


def test_an_interrupted_command_is_one_line_and_exit_130(capsys, monkeypatch):
    """Ctrl-C, or SIGTERM to a training run (which checkpoints first): no traceback."""
    import edge_sr.cli as cli

    def stopped(_args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "train-zoo", stopped)
    assert main(["train-zoo", "--minutes", "1"]) == 130
    assert capsys.readouterr().err.strip() == "edge-sr train-zoo: interrupted"


def test_train_zoo_exports_to_the_weights_folder_it_is_given(monkeypatch, tmp_path, capsys):
    """``--weights`` reaches ``ZooTrainConfig``: a run can advance without touching the
    committed checkpoints."""
    import edge_sr.train_zoo as tz

    seen = []
    monkeypatch.setattr(tz, "train_zoo", lambda cfg: seen.append(cfg) or {})
    assert main(["train-zoo", "--model", "fsrcnn_tiny_x2", "--minutes", "1",
                 "--weights", str(tmp_path)]) == 0
    assert seen[0].weights == str(tmp_path) and seen[0].models == ["fsrcnn_tiny_x2"]
    assert main(["train-zoo", "--minutes", "1"]) == 0 and seen[1].weights == ""
