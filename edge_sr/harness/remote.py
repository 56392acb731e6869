"""Artifacts on a device: verified, uploaded and loaded into a remote engine."""

from __future__ import annotations

import weakref
from pathlib import Path

from runtime.artifact import ArtifactError, read_manifest, verified_library
from runtime.engine import Engine

from ..device.rpc import DeviceError, device_info, first_line

# Libraries already sent in each open session. Sending one again would rewrite a file the
# device process has mapped (two artifacts with the same library: a database that holds
# exactly the default schedules), which kills it (SIGSEGV in dlsym under QEMU).
_SENT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def upload_library(sess, artifact: str | Path, manifest: dict,
                   info: dict | None = None) -> str:
    """Verify an artifact's library, check it fits the device, upload it.

    Args:
        info: The device's ``device_info`` if already read (else it is asked for).

    Returns:
        The library's name on the device.
    """
    lib = verified_library(artifact, manifest)
    info = info if info is not None else device_info(sess)
    arch = manifest["target"].get("arch")
    if info and arch and info["machine"] != arch:
        raise ArtifactError(f"artifact built for target {manifest['target']['name']} ({arch}) "
                            f"cannot run on this {info['machine']} device")
    remote_name = f"edge-sr-{manifest['library']['sha256'][:16]}.so"
    sent = _SENT.setdefault(sess, set())
    if remote_name in sent:  # the same bytes, by their hash
        return remote_name
    try:
        sess.upload(str(lib), target=remote_name)
        sent.add(remote_name)
    except Exception as exc:  # noqa: BLE001
        raise DeviceError(f"uploading {lib.name} to the device failed: "
                           f"{first_line(exc)}") from None
    return remote_name


def remote_engine(sess, artifact: str | Path, manifest: dict | None = None,
                  info: dict | None = None) -> Engine:
    """Verify an artifact, check it fits the device, upload it and load it remotely."""
    from tvm.runtime.vm import VirtualMachine

    manifest = manifest or read_manifest(artifact)
    remote_name = upload_library(sess, artifact, manifest, info)
    try:
        rlib = sess.load_module(remote_name)
        dev = sess.cuda() if manifest["target"].get("kind") == "cuda" else sess.cpu()
        return Engine(VirtualMachine(rlib, dev), dev, manifest)
    except Exception as exc:  # noqa: BLE001
        raise DeviceError(f"loading {remote_name} on the device failed: "
                           f"{first_line(exc)}") from None
