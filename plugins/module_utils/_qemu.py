# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Disk conversion with qemu-img: measure, convert (parallel, compressed), verify, checksum.

The output is written to ``<dest>.partial`` and renamed into place only once it
is complete, verified and flushed; ``<dest>.vmimage.json`` (the sidecar) records
the source state and options it was made from, so a second run with the same
source and options converts nothing. Stdlib only; no Ansible imports.
"""

from __future__ import annotations

import base64
import errno
import hmac
import http.server
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import threading
import time

from ansible_collections.vmimage.replication.plugins.module_utils import _digest, _files
from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError, terminate_as_error
from ansible_collections.vmimage.replication.plugins.module_utils._naming import CREATED_BY
from ansible_collections.vmimage.replication.plugins.module_utils._progress import ProgressFile

FORMATS = ("qcow2", "raw", "vpc")
COMPRESSION_TYPES = ("zlib", "zstd")
VERIFY_MODES = ("none", "check", "compare")
PACKAGE_HINT = "install qemu-img (package qemu-utils on Debian/Ubuntu, qemu-img on RHEL/Fedora/CentOS)"
SIDECAR_VERSION = 1
# Options that change the bytes of the output; the others (coroutines, cache...) only change speed.
RELAY_USER = "qemu-img"  # the loopback relay's basic-auth user; its password is per verification
IDENTITY_KEYS = ("src", "src_format", "format", "compress", "compression_type", "cluster_size")
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def partial_path(dest):
    return dest + ".partial"


def sidecar_path(dest):
    return dest + ".vmimage.json"


def qemu_img():
    """Path of the qemu-img program, or MissingDependency naming the package."""
    path = shutil.which("qemu-img")
    if path is None:
        raise MissingDependency("Failed to find program qemu-img: it is not on PATH; %s on the conversion host" % PACKAGE_HINT)
    return path


def run(args, action):
    """Run qemu-img with ``args``; stdout on success, ReplicationError with its stderr otherwise."""
    proc = subprocess.run([qemu_img()] + list(args), stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ReplicationError("Failed to %s: %s" % (action, _stderr(proc.stderr) or "qemu-img exited with %d" % proc.returncode),
                               rc=proc.returncode)
    return proc.stdout


def _stderr(data):
    return data.decode("utf-8", "replace").strip().replace("qemu-img: ", "")


def check_source(src):
    """Fail clearly when the source is missing or unreadable."""
    denied = "Failed to read source disk %s: permission denied; run the task with become, or give the user read access to it" % src
    try:
        info = os.stat(src)
    except FileNotFoundError:
        raise ReplicationError("Failed to read source disk %s: it does not exist; check src (attach the volume first)" % src) from None
    except PermissionError:
        raise ReplicationError(denied) from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "neither a file nor a block device (a pipe, socket or character device)"
        raise ReplicationError("Failed to read source disk %s: it is %s; src must be a disk image file or a block device" % (src, kind))
    try:
        with open(src, "rb") as handle:
            handle.read(512)
    except PermissionError:
        raise ReplicationError(denied) from None
    except OSError as exc:
        raise ReplicationError("Failed to read source disk %s: %s" % (src, exc.strerror or exc)) from None


def source_info(src, src_format=None):
    """``(format, virtual_size)`` of the source; block devices are raw (never probed: a guest controls their content)."""
    if src_format is None and _files.is_block_device(src):
        src_format = "raw"
    args = ["info", "--output=json"] + (["-f", src_format] if src_format else []) + [src]
    try:
        data = json.loads(run(args, "inspect source disk %s" % src))
    except ReplicationError as exc:
        if "Unknown driver" in exc.msg or "Unknown format" in exc.msg:
            raise ReplicationError("Failed to inspect source disk %s: unknown src_format %r; use a format qemu-img knows, "
                                   "such as raw, qcow2, vmdk, vpc, vhdx, or omit src_format to detect it" % (src, src_format)) from None
        raise
    return src_format or data["format"], int(data["virtual-size"])


def output_options(fmt, compress, compression_type, cluster_size=None):
    """``-o`` options of the output format."""
    if fmt == "qcow2":
        opts = ["cluster_size=%d" % cluster_size] if cluster_size else []
        return opts + (["compression_type=%s" % compression_type] if compress else [])
    if fmt == "vpc":
        return ["force_size=on"]  # keep the exact virtual size instead of rounding to a CHS geometry
    return []


def measure(src, src_format, fmt, options):
    """Upper bound of the bytes the output needs (compression not counted).

    Only qcow2 can be measured; raw output is written sparse and vpc allocates 2 MiB blocks, so both are
    measured as the allocated data of a qcow2 with that granularity.
    """
    if fmt == "qcow2":
        opts = options
    else:
        opts = ["cluster_size=2M"] if fmt == "vpc" else []
    args = ["measure", "--output=json", "-f", src_format, "-O", "qcow2"] + (["-o", ",".join(opts)] if opts else []) + [src]
    return int(json.loads(run(args, "measure source disk %s" % src))["required"])


def check_free_space(required, directory, free):
    """Fail with the numbers and the directory when ``free`` bytes cannot hold ``required``."""
    if required > free:
        raise ReplicationError(
            "Failed to convert disk into %s: not enough free space: the output may need up to %d bytes (%.1f MiB), "
            "%d bytes (%.1f MiB) are free; free space there or choose a dest (with the role: replication_work_dir) on a larger file system"
            % (directory, required, required / 1048576.0, free, free / 1048576.0),
            required_bytes=required, free_bytes=free, directory=directory)


def direct_io_supported(directory):
    """True when files in ``directory`` can be opened with O_DIRECT (not so on some tmpfs, overlay, 9p)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    probe = os.path.join(directory, ".vmimage-odirect-%d" % os.getpid())
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise ReplicationError("Failed to write in directory %s: %s" % (directory, exc.strerror)) from None
    os.close(fd)
    _files.remove(probe)
    return True


def check_cluster_size(cluster_size, src):
    """None, or a power of two from 512 bytes to 2 MiB (what qcow2 allows)."""
    if cluster_size is None:
        return
    if cluster_size < 512 or cluster_size > 2 << 20 or cluster_size & (cluster_size - 1):
        raise ReplicationError("Failed to convert disk %s: cluster_size must be a power of two from 512 to 2097152 bytes, got %d"
                               % (src, cluster_size))


def resolve_cache(cache, fmt, compress):
    """The output cache mode for ``cache`` (``auto`` or an explicit qemu-img mode).

    ``auto`` bypasses the page cache (``none``, O_DIRECT) where the writes are
    cluster-aligned, and uses ``writeback`` for compressed QCOW2: compressed
    clusters are packed at unaligned offsets, which O_DIRECT turns into
    read-modify-write of whole sectors (measured on a 2 GiB disk: 14.7 s against
    12.4 s). Either way the output is flushed with fsync before the module
    returns, so the data is on disk when it says so.
    """
    if cache in (None, "", "auto"):
        return "writeback" if fmt == "qcow2" and compress else "none"
    return cache


def convert_command(src, src_format, partial, fmt, compress, compression_type, coroutines, out_of_order, cache, cluster_size=None):
    """The qemu-img convert argument list (without the program)."""
    args = ["convert", "-p", "-f", src_format, "-O", fmt, "-t", cache, "-m", str(coroutines)]
    if out_of_order:
        args.append("-W")
    if fmt == "qcow2" and compress:
        args.append("-c")
    opts = output_options(fmt, compress, compression_type, cluster_size)
    if opts:
        args += ["-o", ",".join(opts)]
    return args + [src, partial]


def parse_progress(buffer):
    """``(last_percent_or_None, rest)`` from qemu-img ``-p`` output, which is ``(NN.NN/100%)`` records ended by CR."""
    matches = list(_PROGRESS.finditer(buffer))
    if not matches:
        return None, buffer[-64:]
    return float(matches[-1].group(1)), buffer[matches[-1].end():]


def run_convert(args, virtual_size, progress):
    """Run ``qemu-img convert -p``, feeding its percentages into ``progress`` (bytes = percent * virtual size)."""
    proc = subprocess.Popen([qemu_img()] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        rest = b""
        while True:
            chunk = proc.stdout.read1(4096)
            if not chunk:
                break
            percent, rest = parse_progress(rest + chunk)
            if percent is not None:
                progress.update(int(virtual_size * percent / 100.0))
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        reader.join(5)
    if proc.returncode != 0:
        raise ReplicationError("Failed to convert disk %s: %s" % (args[-2], _stderr(b"".join(errors)) or "qemu-img exited with %d" % proc.returncode),
                               rc=proc.returncode)


def verify_output(path, fmt, src, src_format, mode, objects=()):
    """Verify the output; returns what was done: none, info, check or compare. ``objects``: qemu-img --object arguments."""
    if mode == "none":
        return "none"
    objects = list(objects)
    if fmt == "qcow2":
        run(["check"] + objects + ["-f", fmt, path], "check converted image %s" % path)
        done = "check"
    else:  # raw and vpc have no qemu-img check: at least open it as what it claims to be
        run(["info"] + objects + ["-f", fmt, path], "open converted image %s" % path)
        done = "info"
    if mode == "compare":
        proc = subprocess.run([qemu_img(), "compare"] + objects + ["-f", src_format, "-F", fmt, src, path],
                              stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if proc.returncode != 0:
            raise ReplicationError("Failed to verify converted image %s: it differs from source %s: %s"
                                   % (path, src, (_stderr(proc.stdout) + " " + _stderr(proc.stderr)).strip()))
        done = "compare"
    return done


class _ObjectRelay(http.server.BaseHTTPRequestHandler):
    """Serves one object to qemu's curl driver on loopback: HEAD, and GET of byte ranges, each a ranged GetObject.

    qemu-img thus reads the stored object itself, and only the ranges it asks for, while the credentials
    stay in this process: neither a presigned URL nor a key appears in qemu-img's argv. Nor does the relay's own
    password: another local user, who can read argv and reach loopback, is refused (401). qemu's curl driver sends it
    as HTTP basic auth, reading it from a 0600 file named by a qemu ``secret`` object.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *_args):  # pylint: disable=arguments-differ
        pass  # no request log on stderr

    def _allowed(self):
        expected = "Basic " + base64.b64encode(("%s:%s" % (RELAY_USER, self.server.token)).encode("ascii")).decode("ascii")
        if not hmac.compare_digest((self.headers.get("Authorization") or "").encode("ascii", "replace"), expected.encode("ascii")):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="object"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        if self.path != "/object":
            self.send_error(404)
            return False
        return True

    def do_HEAD(self):  # noqa: N802 - http.server's name
        if self._allowed():
            self.send_response(200)
            self.send_header("Content-Length", str(self.server.size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

    def do_GET(self):  # noqa: N802 - http.server's name
        if not self._allowed():
            return
        match = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range") or "")
        first, last = (int(match.group(1)), int(match.group(2) or self.server.size - 1)) if match else (0, self.server.size - 1)
        last = min(last, self.server.size - 1)
        try:
            body = self.server.read(first, last + 1 - first)
        except Exception:  # pylint: disable=broad-except
            self.send_error(502)  # qemu-img reports the failed read, which names the object
            return
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if match:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (first, first + len(body) - 1, self.server.size))
        self.end_headers()
        self.wfile.write(body)


def verify_object(client, bucket, key, size, fmt, src, src_format, mode):
    """``verify_output`` on the stored object ``s3://bucket/key`` (``size`` bytes), read by qemu-img over a loopback relay."""
    if mode == "none":
        return "none"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ObjectRelay)
    server.daemon_threads = True
    server.read, server.size = _digest.object_reader(client, bucket, key, size), size
    server.token = secrets.token_urlsafe(24)
    url = "http://127.0.0.1:%d/object" % server.server_address[1]
    secret_dir = tempfile.mkdtemp(prefix="vmimage-relay-")  # 0700: only this user reads the password file
    secret_file = os.path.join(secret_dir, "password")
    with open(os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="ascii") as handle:
        handle.write(server.token)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    name = "json:" + json.dumps({"driver": fmt, "file": {"driver": "http", "url": url, "readahead": 1048576, "timeout": 60,
                                                         "username": RELAY_USER, "password-secret": "relay"}})
    objects = ["--object", "secret,id=relay,file=%s" % secret_file]
    where = "s3://%s/%s" % (bucket, key)
    try:
        return verify_output(name, fmt, src, src_format, mode, objects)
    except ReplicationError as exc:
        message = exc.msg.replace(name, where).replace(url, where)
        if "Unknown driver 'http'" in message or "Unknown protocol" in message:
            message += " (qemu's curl driver is missing: install qemu-block-extra on Debian/Ubuntu, qemu-kvm-block-curl on RHEL)"
        raise ReplicationError("Failed to verify the stored object %s: %s" % (where, message.replace("Failed to ", "", 1)),
                               bucket=bucket, key=key) from None
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        shutil.rmtree(secret_dir, ignore_errors=True)


def _identity(params, src_format):
    ident = dict((k, params.get(k)) for k in IDENTITY_KEYS)
    ident["cluster_size"] = params.get("cluster_size") if params["format"] == "qcow2" else None
    ident["src_format"] = src_format
    ident["compression_type"] = params["compression_type"] if params["format"] == "qcow2" and params["compress"] else None
    ident["compress"] = bool(params["compress"]) and params["format"] == "qcow2"
    return ident


def up_to_date(sidecar, identity, source_fp, dest):
    """True when ``dest`` still holds the conversion of this source state with these options."""
    if not sidecar or sidecar.get("version") != SIDECAR_VERSION or source_fp is None:
        return False
    if sidecar.get("identity") != identity or sidecar.get("source_fingerprint") != source_fp:
        return False
    try:
        return sidecar.get("dest_fingerprint") == _files.fingerprint(dest)
    except OSError:
        return False


def _result(params, src_format, virtual_size, **values):
    fmt = params["format"]
    result = dict(src=params["src"], dest=params["dest"], format=fmt, src_format=src_format,
                  compression_type=params["compression_type"] if fmt == "qcow2" and params["compress"] else None,
                  virtual_size=virtual_size, stored_size=None, compression_ratio=None, sha256=None,
                  seconds=0.0, bytes_per_second=0, verified="none", cache=None, changed=False, required_bytes=None)
    result.update(values)
    return result


def ensure_present(params, check_mode=False, clock=time.monotonic):
    """Convert ``src`` to ``dest`` unless the sidecar says it is already done. Returns ``(result, warnings)``."""
    src, dest = params["src"], params["dest"]
    qemu_img()
    check_source(src)
    src_format, virtual_size = source_info(src, params.get("src_format"))
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise ReplicationError("Failed to convert disk %s: the directory of dest %s does not exist; create it first" % (src, directory))
    identity = _identity(params, src_format)
    source_fp = _files.fingerprint(src)
    sidecar = _files.read_json(sidecar_path(dest))
    if not params.get("force") and up_to_date(sidecar, identity, source_fp, dest):
        recorded = sidecar["result"]
        return _result(params, src_format, virtual_size, stored_size=recorded["stored_size"],
                       compression_ratio=recorded["compression_ratio"], sha256=recorded["sha256"],
                       verified=recorded["verified"], cache=recorded["cache"]), []
    warnings = []
    cache = resolve_cache(params.get("cache"), params["format"], params["compress"])
    if cache == "none" and not check_mode and not direct_io_supported(directory):
        cache = "writeback"
        warnings.append("The file system of %s does not support O_DIRECT; converted with cache=writeback and flushed "
                        "the output with fsync instead" % directory)
    partial = partial_path(dest)
    stale = os.path.getsize(partial) if os.path.exists(partial) else 0
    opts = output_options(params["format"], params["compress"], params["compression_type"], params.get("cluster_size"))
    required = measure(src, src_format, params["format"], opts)
    check_free_space(required, directory, _files.free_bytes(directory) + stale)
    if check_mode:
        return _result(params, src_format, virtual_size, cache=cache, changed=True, required_bytes=required), warnings
    started = clock()
    _files.remove(partial)  # a stale partial from a killed run
    _files.remove(sidecar_path(dest))  # dest is about to change: the record no longer holds
    progress = ProgressFile(params.get("progress_file"), "convert", virtual_size)
    progress.update(0, force=True)
    try:
        with terminate_as_error("convert disk %s" % src):
            args = convert_command(src, src_format, partial, params["format"], params["compress"], params["compression_type"],
                                   params["coroutines"], params["out_of_order"], cache, params.get("cluster_size"))
            run_convert(args, virtual_size, progress)
            if cache != "none":
                _files.fsync_path(partial)
            verified = verify_output(partial, params["format"], src, src_format, params["verify"])
            digest = _files.sha256_file(partial) if params.get("checksum", True) else None
            os.replace(partial, dest)
            _files.fsync_path(directory)
    except BaseException:
        _files.remove(partial)
        progress.finish("failed")
        raise
    seconds = max(clock() - started, 1e-6)
    stored = os.path.getsize(dest)
    values = dict(stored_size=stored, compression_ratio=round(virtual_size / float(stored), 2) if stored else None,
                  sha256=digest, verified=verified, cache=cache)
    _files.write_json(sidecar_path(dest), dict(version=SIDECAR_VERSION, identity=identity, source_fingerprint=source_fp,
                                               dest_fingerprint=_files.fingerprint(dest), created_by=CREATED_BY,
                                               converted=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), result=values))
    progress.finish()
    return _result(params, src_format, virtual_size, seconds=round(seconds, 3), required_bytes=required,
                   bytes_per_second=int(virtual_size / seconds), changed=True, **values), warnings


def ensure_absent(params, check_mode=False):
    """Remove dest, its sidecar and any partial output."""
    dest = params["dest"]
    paths = [p for p in (dest, sidecar_path(dest), partial_path(dest)) if os.path.lexists(p)]
    if not check_mode:
        for path in paths:
            try:
                os.unlink(path)
            except OSError as exc:
                raise ReplicationError("Failed to remove converted image %s: %s" % (path, exc.strerror)) from None
    result = _result(params, params.get("src_format"), None, changed=bool(paths))
    return result
