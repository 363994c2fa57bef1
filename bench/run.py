"""Measure the data path (convert + upload) against the naive way and the physical bounds, in one run.

    .venv/bin/python bench/run.py [--size 2G] [--fill 0.4] [--repeat 1] [--only naive,ours-zlib]

Stages (each runs in its own child process, so its peak memory is its own):
  bound-read        read the source once (what "read once" costs)
  bound-compress    zlib (level 6, as qemu) over 64 KiB clusters with all cores, zero clusters skipped
  bound-compress-zlib-ng  the same with zlib-ng (the library ours-zlib compresses with)
  bound-compress-zstd     the same with zstd level 3 (the library and level of ours-zstd)
  bound-upload      upload that many compressed bytes from memory
  naive             qemu-img convert -c -O qcow2 to a local file, then ibm_boto3's default upload_file
  ours-zlib         the collection's data path: image_upload with its defaults (zlib output; zlib-ng when installed)
  ours-zlib-stdlib  the same with deflate_library=zlib (Python's zlib: what a host without zlib-ng gets)
  ours-zstd         the same with compression_type=zstd
  ours-zlib-64g     ours-zlib on a 64 GiB sparse disk holding the same data at the same offsets
  verify-target     image_verify at the target: the guest digest recomputed from the ours-zlib object
  staged-zlib       qemu_convert then cos_upload with their defaults (the path for non-raw sources)

The source is a real ext4 image ~40% filled with real files (hack/sample_disk.py), cached under
.cache/bench/. The S3 peer is a local rclone server. Results go to bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".build", "pytest-collections")
CACHE = os.path.join(ROOT, ".cache", "bench")
RESULTS = os.path.join(ROOT, "bench", "results")
CLUSTER = 64 * 1024
STAGES = ("bound-read", "bound-compress", "bound-compress-zlib-ng", "bound-compress-zstd", "bound-upload", "naive", "ours-zlib",
          "ours-zlib-stdlib", "ours-zstd", "staged-zlib", "ours-zlib-64g", "verify-target")
OURS = ("ours-zlib", "ours-zlib-stdlib", "ours-zstd", "staged-zlib", "ours-zlib-64g")
# The compression bound of each of ours: the same library it compresses with.
LIBRARY_BOUND = {"ours-zlib": "bound-compress-zlib-ng", "ours-zlib-64g": "bound-compress-zlib-ng", "ours-zlib-stdlib": "bound-compress",
                 "ours-zstd": "bound-compress-zstd", "staged-zlib": "bound-compress"}
ACCESS_KEY_ID = "AKIAVMIMAGE7BENCHKEY1"
SECRET_ACCESS_KEY = "vmImgBench/7c1LxQ2wPn9VbT6yRu1sEoA4dHcJkM"


def _paths():
    link = os.path.join(COLLECTIONS, "ansible_collections", "vmimage", "replication")
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(ROOT, link, target_is_directory=True)
    for entry in (ROOT, COLLECTIONS):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def source_image(size, fill):
    path = os.path.join(CACHE, "source-%s-%s.img" % (size, fill))
    if not os.path.exists(path):
        os.makedirs(CACHE, exist_ok=True)
        print("building %s (cached for later runs)" % path, flush=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "hack", "sample_disk.py"), path + ".tmp", "--size", size, "--fill", str(fill)],
                       check=True)
        os.replace(path + ".tmp", path)
    return path


# ---- stages (run in a child process) ----

def stage_read(ctx):
    done = 0
    view = memoryview(bytearray(4 << 20))
    with open(ctx["source"], "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(view)
            if not count:
                break
            done += count
    return dict(bytes_read=done)


def _packer(library):
    """``compress(cluster)`` as the stream packs one cluster with ``library`` (zlib, zlib-ng: qemu's deflate parameters; zstd level 3)."""
    if library == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=3).compress
    if library == "zlib-ng":
        from zlib_ng import zlib_ng as lib
    else:
        lib = zlib

    def deflate(block):
        packer = lib.compressobj(6, lib.DEFLATED, -12, 9)
        return packer.compress(block) + packer.flush()
    return deflate


def _compress_range(args):
    path, start, stop, library = args
    compress = _packer(library)
    zero = bytes(CLUSTER)
    out = []
    with open(path, "rb") as handle:
        handle.seek(start)
        for _offset in range(start, stop, CLUSTER):
            block = handle.read(CLUSTER)
            if not block or block == zero[:len(block)]:
                continue
            data = compress(block)
            out.append(data if len(data) < len(block) else block)
    return b"".join(out)


def stage_compress(ctx, library="zlib"):
    size = os.path.getsize(ctx["source"])
    step = 64 * CLUSTER
    ranges = [(ctx["source"], start, min(start + step, size), library) for start in range(0, size, step)]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        chunks = pool.map(_compress_range, ranges, chunksize=8)
    blob = b"".join(chunks)
    if library == "zlib" or not os.path.exists(ctx["blob"]):
        with open(ctx["blob"], "wb") as handle:  # hand the size to bound-upload (it is not part of the timing)
            handle.truncate(len(blob))
    return dict(compressed_bytes=len(blob), workers=os.cpu_count(), library=library)


def _client(ctx):
    from ansible_collections.vmimage.replication.plugins.module_utils import _cos

    return _cos.connect(dict(endpoint=ctx["endpoint"], region="us-south", access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY))


def stage_upload(ctx):
    size = os.path.getsize(ctx["blob"])
    data = os.urandom(1 << 20) * (size >> 20) + os.urandom(size % (1 << 20))  # incompressible, like compressed data
    client = _client(ctx)
    started = time.monotonic()
    client.upload_fileobj(io.BytesIO(data), ctx["bucket"], "bound-upload")  # the SDK's defaults: the fastest seen here
    return dict(uploaded_bytes=size, seconds_override=time.monotonic() - started)


def stage_naive(ctx):
    out = os.path.join(ctx["workdir"], "naive.qcow2")
    started = time.monotonic()
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", ctx["source"], out], check=True)
    converted = time.monotonic() - started
    _client(ctx).upload_file(out, ctx["bucket"], "naive.qcow2")
    size = os.path.getsize(out)
    os.unlink(out)
    return dict(convert_seconds=converted, upload_seconds=time.monotonic() - started - converted, output_bytes=size, peak_disk=size)


def module_defaults(name):
    """Every option of module ``name`` at its default (None where it has none)."""
    import importlib

    from ansible_collections.vmimage.replication.plugins.module_utils._module import argument_spec

    module = importlib.import_module("ansible_collections.vmimage.replication.plugins.modules." + name)
    spec = argument_spec(module.OPTIONS)
    return {option: value.get("default") for option, value in spec.items()}


def written_to_storage():
    """Bytes this process had written to storage (/proc/self/io write_bytes): an upper bound of the local disk it used."""
    with open("/proc/self/io") as handle:
        fields = dict(line.split(": ") for line in handle.read().splitlines())
    return int(fields["write_bytes"])


def sparse_copy(source, path, size):
    """``source``'s data at the same offsets in a sparse file of ``size`` bytes (made once, cached)."""
    if not os.path.exists(path):
        subprocess.run(["cp", "--sparse=always", source, path + ".tmp"], check=True)
        os.truncate(path + ".tmp", size)
        os.replace(path + ".tmp", path)
    return path


def stage_stream(ctx, source=None, key=None, **options):
    from ansible_collections.vmimage.replication.plugins.module_utils import _image_upload

    params = module_defaults("image_upload")
    key = key or ("stream-%s.qcow2" % "-".join(sorted(options.values())) if options else "stream.qcow2")
    params.update(src=source or ctx["source"], bucket=ctx["bucket"], key=key, work_dir=ctx["workdir"], metadata={"source-server": "bench"},
                  force=True, **options)
    params["threads"] = params["threads"] or os.cpu_count()
    written = written_to_storage()
    result = _image_upload.ensure_present(_client(ctx), params)
    return dict(output_bytes=result["size"], peak_disk=written_to_storage() - written, parts=result["parts"], sha256=result["sha256"],
                compressor=result["compressor"], read_bytes=result["read_bytes"], verify_seconds=result["verify_seconds"],
                virtual_size=result["virtual_size"])


def stage_stream_64g(ctx):
    source = sparse_copy(ctx["source"], os.path.join(CACHE, "sparse-64G-" + os.path.basename(ctx["source"])), 64 << 30)
    return stage_stream(ctx, source=source, key="stream-64g.qcow2")


def stage_verify_target(ctx):
    """What the target does before it imports (image_import verify_digest, image_verify): recompute the guest digest."""
    from ansible_collections.vmimage.replication.plugins.module_utils import _digest

    result = _digest.verify_object(_client(ctx), ctx["bucket"], "stream.qcow2")
    return dict(output_bytes=result["size"], guest_sha256=result["guest_sha256"])


def stage_ours(ctx, compression_type, cluster_size=None):
    from ansible_collections.vmimage.replication.plugins.module_utils import _cos, _qemu

    dest = os.path.join(ctx["workdir"], "ours-%s.qcow2" % compression_type)
    # The modules' own defaults: the bench measures what a user of the collection gets.
    params = module_defaults("qemu_convert")
    params.update(src=ctx["source"], dest=dest, compression_type=compression_type, cluster_size=cluster_size, force=True)
    started = time.monotonic()
    result, _warnings = _qemu.ensure_present(params)
    converted = time.monotonic() - started
    upload = module_defaults("cos_upload")
    uploaded = _cos.upload_file(_client(ctx), ctx["bucket"], "ours-%s.qcow2" % compression_type, dest, upload["part_size_mb"] << 20,
                                upload["concurrency"], {"source-server": "bench"}, sha256=result["sha256"])
    size = os.path.getsize(dest)
    for path in (dest, _qemu.sidecar_path(dest)):
        os.unlink(path)
    return dict(convert_seconds=converted, upload_seconds=time.monotonic() - started - converted, output_bytes=size, peak_disk=size,
                cache=result["cache"], parts=uploaded.get("parts"), sha256=result["sha256"])


def run_stage(name, ctx):
    _paths()
    runner = {"bound-read": stage_read, "bound-compress": stage_compress, "bound-upload": stage_upload, "naive": stage_naive,
              "ours-zlib": stage_stream, "ours-zlib-stdlib": lambda c: stage_stream(c, deflate_library="zlib"),
              "ours-zstd": lambda c: stage_stream(c, compression_type="zstd"), "staged-zlib": lambda c: stage_ours(c, "zlib"),
              "bound-compress-zlib-ng": lambda c: stage_compress(c, "zlib-ng"), "bound-compress-zstd": lambda c: stage_compress(c, "zstd"),
              "ours-zlib-64g": stage_stream_64g, "verify-target": stage_verify_target}[name]
    started = time.monotonic()
    values = runner(ctx)
    seconds = values.pop("seconds_override", None) or (time.monotonic() - started)
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    values.update(seconds=round(seconds, 3), cpu_seconds=round(cpu, 2), cores_used=round(cpu / seconds, 2),
                  peak_rss_kib=own.ru_maxrss + kids.ru_maxrss, self_rss_kib=own.ru_maxrss, children_rss_kib=kids.ru_maxrss)
    return values


# ---- orchestration ----

def child(name, ctx):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--stage", name, "--ctx", json.dumps(ctx)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G")
    parser.add_argument("--fill", type=float, default=0.4)
    parser.add_argument("--repeat", type=int, default=1, help="run every stage this many times, in turns; keep the fastest of each")
    parser.add_argument("--only", default=",".join(STAGES))
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--ctx", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        print(json.dumps(run_stage(args.stage, json.loads(args.ctx))))
        return 0
    _paths()
    from tests.peers import s3

    source = source_image(args.size, args.fill)
    workdir = tempfile.mkdtemp(prefix="bench-", dir=CACHE)
    server = s3.start_rclone(os.path.join(workdir, "s3"), ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    try:
        bucket = server.make_bucket("bench")
        ctx = dict(source=source, workdir=workdir, endpoint=server.endpoint, bucket=bucket, blob=os.path.join(workdir, "blob"))
        wanted = [s for s in STAGES if s in args.only.split(",")]
        results = {}
        for _round in range(args.repeat):
            for name in wanted:
                value = child(name, ctx)
                print("%-15s %7.2f s  %s" % (name, value["seconds"], _brief(value)), flush=True)
                if name not in results or value["seconds"] < results[name]["seconds"]:
                    results[name] = value
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report = summarise(results, source, args)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + ".json")
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
    for line in report["summary"]:
        print(line)
    print("written %s" % path)
    return 0


def _brief(value):
    keys = ("cpu_seconds", "cores_used", "convert_seconds", "upload_seconds", "output_bytes", "compressed_bytes", "peak_disk", "peak_rss_kib",
            "cache", "compressor")
    return " ".join("%s=%s" % (k, round(value[k], 2) if isinstance(value[k], float) else value[k]) for k in keys if k in value)


def summarise(results, source, args):
    lines = []
    report = dict(source=source, virtual_size=os.path.getsize(source), allocated=os.stat(source).st_blocks * 512,
                  cpu_count=os.cpu_count(), loadavg=os.getloadavg(), repeat=args.repeat, stages=results, summary=lines)
    naive = results.get("naive", {}).get("seconds")
    for name in OURS:
        bounds = [results[k]["seconds"] for k in ("bound-read", LIBRARY_BOUND[name], "bound-upload") if k in results]
        ours = results.get(name, {}).get("seconds")
        if ours is None:
            continue
        if naive:
            report["%s/naive" % name] = round(ours / naive, 3)
            lines.append("%s/naive = %.2f (%.1f s vs %.1f s)" % (name, ours / naive, ours, naive))
        if naive:
            cpu_ratio = results[name]["cpu_seconds"] / results["naive"]["cpu_seconds"]
            report["%s/naive_cpu" % name] = round(cpu_ratio, 3)
            cpus = (name, cpu_ratio, results[name]["cpu_seconds"], results["naive"]["cpu_seconds"])
            lines.append("%s cpu/naive cpu = %.2f (%.1f s vs %.1f s of CPU)" % cpus)
        if bounds:
            report["%s/bound" % name] = round(ours / max(bounds), 3)
            lines.append("%s/max(bounds) = %.2f (bound %.1f s, compression bound with %s)" % (name, ours / max(bounds), max(bounds), LIBRARY_BOUND[name]))
        if "verify_seconds" in results[name]:
            report["%s/verify_in_module" % name] = round(results[name]["verify_seconds"] / ours, 3)
            lines.append("%s: its own verification of the stored object (read back + qemu-img check) %.1f s = %.2f of the run"
                         % (name, results[name]["verify_seconds"], results[name]["verify_seconds"] / ours))
    if "verify-target" in results and "ours-zlib" in results:
        ratio = results["verify-target"]["seconds"] / results["ours-zlib"]["seconds"]
        report["verify-target/ours-zlib"] = round(ratio, 3)
        lines.append("verify at the target (guest digest from the stored object) / ours-zlib upload = %.2f (%.1f s vs %.1f s)"
                     % (ratio, results["verify-target"]["seconds"], results["ours-zlib"]["seconds"]))
    for name, value in sorted(results.items()):
        if "peak_disk" in value:
            lines.append("%-10s peak local disk %.0f MiB, peak memory %.0f MiB (the stage's own process %.0f MiB, its largest child %.0f MiB)"
                         % (name, value["peak_disk"] / 1048576.0, value["peak_rss_kib"] / 1024.0, value["self_rss_kib"] / 1024.0,
                            value["children_rss_kib"] / 1024.0))
    lines.append("load average at the end: %s (2-core box shared with other work: times are noisy)" % ", ".join("%.1f" % x for x in os.getloadavg()))
    return report


if __name__ == "__main__":
    sys.exit(main())
