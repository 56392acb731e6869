"""Artifact folders: ``manifest.json`` + the compiled library, verified before loading.

Standard library only, shared by the device runtime and the host pipeline. An artifact
is written into a temporary folder and renamed into place, so a folder that has a
``manifest.json`` is complete; the library is loaded only if its sha256 matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class ArtifactError(Exception):
    """An artifact that is missing, incomplete, tampered with, or for another machine."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(artifact: str | Path) -> dict:
    """Load and sanity-check ``manifest.json`` of an artifact folder."""
    path = Path(artifact) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{artifact} is not an artifact: no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    for key in ("model", "scale", "colour", "input", "library", "target"):
        if key not in manifest:
            raise ArtifactError(f"{path} lacks the field {key!r}")
    return manifest


def verified_library(artifact: str | Path, manifest: dict, which: str = "library") -> Path:
    """Path of the artifact's library after checking it against the manifest's sha256."""
    entry = manifest[which]
    lib = Path(artifact) / entry["file"]
    if not lib.is_file():
        raise ArtifactError(f"{lib} is missing")
    actual = sha256_file(lib)
    if actual != entry["sha256"]:
        raise ArtifactError(f"{lib} does not match its manifest (sha256 {actual[:12]}... != "
                            f"{entry['sha256'][:12]}...): refusing to load it")
    return lib


def check_machine(manifest: dict, machine: str | None = None) -> None:
    """Refuse an artifact whose library was built for another CPU architecture."""
    machine = machine or platform.machine()
    arch = manifest["target"].get("arch")
    if arch and arch != machine:
        raise ArtifactError(f"artifact built for target {manifest['target'].get('name')} "
                            f"({arch}) cannot run on this {machine} machine")


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it replaces ``final``.

    On an exception the temporary folder is removed and ``final`` is left as it was, so a
    failed build never leaves a half artifact that looks valid.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would make the artifact private to the builder
    try:
        yield tmp
        old = final.with_name(f".{final.name}.old")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write a file through a temporary file and a rename: whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj: dict) -> None:
    """Write JSON through a temporary file and a rename."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())
