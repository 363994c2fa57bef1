# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Sealed credentials for the management-application path: AES-256-GCM (pycryptodome), a fresh key per run.

A management application seals the object storage credentials before it starts a run::

    blob, key = seal({"endpoint": ..., "region": ..., "access_key_id": ..., "secret_access_key": ...})
    ansible_runner.run(..., extravars={"powervc_host_sealed_cos": blob}, envvars={"VMIMAGE_SEAL_KEY": key})
    scrub(private_data_dir, key)   # ansible-runner copies its environment into artifacts/<id>/command

The blob travels in the extra vars, the key only in the environment (never argv, never a file that stays);
the blob is opened only where the credentials are used: a module on another host gets ``cos: {endpoint, sealed, seal_key}``
(``seal_key`` is no_log and travels inside the module payload) and opens it in its own process (``open_cos``); the
controller opens it with the filter ``vmimage.replication.unseal``.
Authenticated encryption: a blob that was changed, cut short or sealed with another key fails with a clear
error instead of giving wrong credentials. The blob is ``vmis1.<base64url(nonce 12 | ciphertext | tag 16)>``,
the key ``base64url`` of 32 random bytes; the associated data binds the format version.

Command line (``extensions/seal.py``, or ``python -m`` this module with the collection importable): reads the
credentials as JSON on stdin and prints ``{"sealed": ..., "key": ...}`` on stdout.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys

from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError

try:
    from Crypto.Cipher import AES
    from Crypto.Random import get_random_bytes
    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported as MissingDependency
    IMPORT_ERROR = exc

PREFIX = "vmis1."
AAD = b"vmimage.replication sealed v1"
KEY_ENV = "VMIMAGE_SEAL_KEY"
_NONCE, _TAG = 12, 16


def _require():
    if IMPORT_ERROR is not None:
        raise MissingDependency("Failed to use sealed credentials: the Python library pycryptodome is not installed; pip install pycryptodome")


def _b64(data):
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text, what):
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ReplicationError("Failed to unseal credentials: the %s is not base64url; pass it exactly as seal() returned it" % what) from None


def new_key():
    """A fresh 256-bit key, base64url; one per run."""
    _require()
    return _b64(get_random_bytes(32))


def seal(data, key=None):
    """``(blob, key)``: ``data`` (JSON-serialisable) sealed with ``key`` (a fresh one when None)."""
    _require()
    key = key or new_key()
    raw = _key_bytes(key)
    cipher = AES.new(raw, AES.MODE_GCM, nonce=get_random_bytes(_NONCE))
    cipher.update(AAD)
    body, tag = cipher.encrypt_and_digest(json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    return PREFIX + _b64(cipher.nonce + body + tag), key


def _key_bytes(key):
    if not key:
        raise ReplicationError("Failed to unseal credentials: no key; the run needs the key in the environment variable %s" % KEY_ENV)
    raw = _unb64(key, "key")
    if len(raw) != 32:
        raise ReplicationError("Failed to unseal credentials: the key is %d bytes, not 32; pass the key seal() returned" % len(raw))
    return raw


def unseal(blob, key):
    """The data sealed in ``blob``; ReplicationError when the blob was changed, cut short or sealed with another key."""
    _require()
    raw_key = _key_bytes(key)
    if not isinstance(blob, str) or not blob.startswith(PREFIX):
        raise ReplicationError("Failed to unseal credentials: the value is not a sealed blob (it should start with %s)" % PREFIX)
    raw = _unb64(blob[len(PREFIX):], "sealed blob")
    if len(raw) < _NONCE + _TAG + 1:
        raise ReplicationError("Failed to unseal credentials: the sealed blob is truncated (%d bytes); pass it whole" % len(raw))
    cipher = AES.new(raw_key, AES.MODE_GCM, nonce=raw[:_NONCE])
    cipher.update(AAD)
    try:
        plain = cipher.decrypt_and_verify(raw[_NONCE:-_TAG], raw[-_TAG:])
    except ValueError:
        raise ReplicationError("Failed to unseal credentials: the sealed blob does not verify - it was changed or cut short, or it was sealed "
                               "with another key; seal the credentials again for this run") from None
    return json.loads(plain.decode("utf-8"))


def open_cos(cos):
    """``cos`` with its ``sealed`` blob opened with its ``seal_key``, in the process that uses the credentials.

    The blob holds the cos dict, or ``{"cos": {...}, ...}``; its values win over the plain ones (endpoint, region).
    ``cos`` unchanged when it has no ``sealed`` blob.
    """
    if not cos or not cos.get("sealed"):
        return cos
    data = unseal(cos["sealed"], cos.get("seal_key"))
    inner = data.get("cos", data) if isinstance(data, dict) else None
    if not isinstance(inner, dict):
        raise ReplicationError("Failed to unseal credentials: the sealed blob holds no cos dict; seal the cos credentials (endpoint, keys)")
    opened = {name: value for name, value in cos.items() if name not in ("sealed", "seal_key")}
    opened.update((name, value) for name, value in inner.items() if value is not None)
    return opened


def scrub(private_data_dir, key):
    """Remove every file under ``private_data_dir`` that holds ``key`` (ansible-runner's artifacts/<id>/command); the removed paths."""
    removed = []
    needle = key.encode("ascii")
    for root, _dirs, files in os.walk(private_data_dir):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as handle:
                    found = needle in handle.read()
            except OSError:
                continue
            if found:
                os.remove(path)
                removed.append(path)
    return removed


def main(stdin=sys.stdin, stdout=sys.stdout):
    """CLI: credentials as JSON on stdin -> ``{"sealed": blob, "key": key}`` on stdout."""
    try:
        data = json.load(stdin)
    except ValueError as exc:
        sys.stderr.write("seal: stdin is not JSON: %s\n" % exc)
        return 2
    try:
        blob, key = seal(data)
    except ReplicationError as exc:
        sys.stderr.write("seal: %s\n" % exc.msg)
        return 2
    json.dump({"sealed": blob, "key": key}, stdout)
    stdout.write("\n")
    return 0
