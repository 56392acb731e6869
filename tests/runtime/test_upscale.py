"""runtime.upscale on the host: colour modes, bad input, refusals, atomic output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from runtime.artifact import ArtifactError, check_machine, read_manifest
from runtime.engine import load_local
from runtime.upscale import main as upscale_main
from runtime.upscale import read_picture, upscale_picture

RNG = np.random.default_rng(0)


def _save(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("kind", ["rgb", "gray", "rgba", "la", "palette", "gray16", "jpeg"])
def test_colour_modes(tmp_path, host_artifact, kind):
    h, w = 40, 50
    rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    src = tmp_path / ("in.jpg" if kind == "jpeg" else "in.png")
    im = {"rgb": lambda: Image.fromarray(rgb),
          "jpeg": lambda: Image.fromarray(rgb),
          "gray": lambda: Image.fromarray(rgb[..., 0]),
          "rgba": lambda: Image.fromarray(np.dstack([rgb, rgb[..., :1]])),
          "la": lambda: Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]])),
          "palette": lambda: Image.fromarray(rgb).convert("P"),
          "gray16": lambda: Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)}[kind]()
    im.save(src)
    out = tmp_path / "out.png"
    assert upscale_main([str(src), "-o", str(out), "--artifact", str(host_artifact),
                         "--quiet"]) == 0
    res = Image.open(out)
    assert res.size == (2 * w, 2 * h)
    expected_mode = {"rgb": "RGB", "jpeg": "RGB", "gray": "L", "rgba": "RGBA", "la": "LA",
                     "palette": "RGB", "gray16": "I;16"}[kind]
    assert res.mode == expected_mode


def test_y_model_keeps_colour_from_chroma(tmp_path, host_artifact):
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200  # saturated red: chroma must survive the Y-only model
    pic = read_picture(_save(tmp_path / "red.png", rgb))
    out = upscale_picture(pic, load_local(host_artifact))
    assert out.rgb.shape == (80, 80, 3)
    assert out.rgb[..., 0].mean() > out.rgb[..., 2].mean() + 0.3


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n truncated", b"GIF89a garbage"])
def test_corrupt_input_is_one_line_error(tmp_path, host_artifact, capsys, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    out = tmp_path / "out.png"
    assert upscale_main([str(bad), "-o", str(out), "--artifact", str(host_artifact)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("runtime.upscale: error:") and "\n" not in err
    assert not out.exists()


def test_existing_output_survives_a_failed_run(tmp_path, host_artifact):
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    upscale_main([str(bad), "-o", str(out), "--artifact", str(host_artifact)])
    assert out.read_bytes() == b"precious"


def test_tampered_library_is_refused(tmp_path, host_artifact):
    art = tmp_path / "art"
    shutil.copytree(host_artifact, art)
    with open(art / "model.so", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        load_local(art)


def test_truncated_manifest_is_refused(tmp_path, host_artifact):
    art = tmp_path / "art"
    shutil.copytree(host_artifact, art)
    (art / "manifest.json").write_text('{"model": ')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(art)


def test_artifact_for_another_architecture_is_refused(host_artifact):
    manifest = read_manifest(host_artifact)
    with pytest.raises(ArtifactError, match="cannot run on this aarch64"):
        check_machine(manifest, machine="aarch64")


def test_runtime_works_without_torch_or_edge_sr(tmp_path, host_artifact):
    # The device has neither: make both unimportable and run the upscaler. (On a machine
    # with torch, tvm-ffi imports it optionally, so absence must be simulated.)
    src = _save(tmp_path / "in.png", RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'edge_sr'):\n"
        "            raise ImportError('not on the device: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import runtime.upscale as u\n"
        "sys.exit(u.main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(src), "-o", str(tmp_path / "o.png"),
                           "--artifact", str(host_artifact), "--quiet"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert Image.open(tmp_path / "o.png").size == (40, 40)
    assert json.loads((host_artifact / "manifest.json").read_text())["model"] == "fsrcnn_tiny_x2"


def _bomb_png(path, width=100_000, height=100_000):
    """A PNG whose header claims width x height pixels (its data is a few bytes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_huge_header_is_refused_in_one_line_before_decoding(tmp_path, host_artifact, capsys):
    src = _bomb_png(tmp_path / "bomb.png")
    out = tmp_path / "out.png"
    assert upscale_main([str(src), "-o", str(out), "--artifact", str(host_artifact)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "100000x100000" in err and "--max-pixels" in err
    assert not out.exists()


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    from runtime.upscale import ImageError

    src = _save(tmp_path / "in.png", RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    assert read_picture(src, limit=600).rgb.shape == (20, 30, 3)
    with pytest.raises(ImageError, match="over the limit of 599"):
        read_picture(src, limit=599)
    monkeypatch.setenv("EDGE_SR_MAX_PIXELS", "100")
    with pytest.raises(ImageError, match="limit of 100"):
        read_picture(src)


def test_training_images_share_the_limit(tmp_path):
    from edge_sr.data import DatasetError, load_image

    with pytest.raises(DatasetError, match="over the limit") as err:
        load_image(_bomb_png(tmp_path / "bomb.png"))
    assert "\n" not in str(err.value)
