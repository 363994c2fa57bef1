"""The streaming QCOW2 writer: layout arithmetic, and images that qemu-img checks and compares equal to their source."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from ansible_collections.vmimage.replication.plugins.module_utils import _files, _qcow2, _stream

MIB = 1024 * 1024
CLUSTER = 65536


def qemu_img(*args):
    return subprocess.run(["qemu-img"] + list(args), capture_output=True, text=True, check=False)


def noise(length, seed):
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha512(b"%s-%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:length])


def text(length, seed=b"t"):
    line = b"replication of %s: the quick brown fox jumps over the lazy dog 0123456789\n" % seed
    return (line * (length // len(line) + 1))[:length]


def write_sparse(path, size, pieces):
    """A sparse raw image of ``size`` bytes holding ``pieces`` [(offset, bytes)]; the rest is a hole."""
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, data in pieces:
            handle.seek(offset)
            handle.write(data)
    return str(path)


def stream(src, dest, cluster_size=CLUSTER, compression_type="zlib", library="auto", threads=2):
    fd = os.open(src, os.O_RDONLY)
    out = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    finals = []
    try:
        size = os.fstat(fd).st_size
        writer = _qcow2.StreamWriter(_qcow2.Layout(size, cluster_size), lambda d: os.write(out, d),
                                     lambda d, o: os.pwrite(out, d, o), compression_type)
        compress, _name = _qcow2.make_compressor(compression_type, library=library)
        _stream.convert(fd, size, writer, compress, threads, on_final=finals.append)
        end = writer.finish()
    finally:
        os.close(fd)
        os.close(out)
    return writer, end, finals


def assert_same(src, image, src_format="raw"):
    check = qemu_img("check", "--output=json", "-f", "qcow2", image)
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0, report
    compare = qemu_img("compare", "-f", src_format, "-F", "qcow2", src, image)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    return report


CASES = {
    # name: (virtual size, pieces)
    "mixed": (8 * MIB, [(0, text(MIB)), (3 * MIB, noise(MIB, b"n")), (5 * MIB + 4096, text(70000, b"x"))]),
    "odd-size-data-at-end": (5 * MIB + 4096 + 512, [(5 * MIB, text(4096 + 512, b"end"))]),
    "all-zero": (4 * MIB, []),
    "incompressible": (3 * MIB, [(0, noise(3 * MIB, b"r"))]),
    "single-byte": (CLUSTER * 3, [(CLUSTER + 17, b"\x01")]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_images_check_clean_and_equal_their_source(tmp_path, case):
    size, pieces = CASES[case]
    src = write_sparse(tmp_path / "src.img", size, pieces)
    writer, end, finals = stream(src, str(tmp_path / "out.qcow2"))
    assert end == os.path.getsize(tmp_path / "out.qcow2")
    report = assert_same(src, str(tmp_path / "out.qcow2"))
    assert report["image-end-offset"] == end
    info = json.loads(qemu_img("info", "--output=json", str(tmp_path / "out.qcow2")).stdout)
    assert info["virtual-size"] == size and info["cluster-size"] == CLUSTER
    assert info["format-specific"]["data"]["compression-type"] == "zlib"
    assert finals == sorted(finals), "the final position only grows"
    data_clusters = sum(-(-n // CLUSTER) for _o, n in _stream.chunk_plan([(o, o + len(d)) for o, d in pieces if d], size, CLUSTER))
    assert end <= writer.layout.upper_bound(data_clusters), "upper_bound sizes the parts: it must hold"


def test_empty_and_odd_sized_sources(tmp_path):
    # qemu rounds a raw file up to whole sectors: the bytes past its end read as zeros.
    for size, data in ((0, b""), (34, b"hello, not a multiple of 512 bytes")):
        src = tmp_path / ("src-%d.img" % size)
        src.write_bytes(data)
        virtual = json.loads(qemu_img("info", "--output=json", "-f", "raw", str(src)).stdout)["virtual-size"]
        fd = os.open(str(src), os.O_RDONLY)
        out = os.open(str(tmp_path / "out.qcow2"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            writer = _qcow2.StreamWriter(_qcow2.Layout(virtual), lambda d: os.write(out, d), lambda d, o: os.pwrite(out, d, o))
            _stream.convert(fd, virtual, writer, _qcow2.make_compressor("zlib")[0], 2)
            writer.finish()
        finally:
            os.close(fd)
            os.close(out)
        assert_same(str(src), str(tmp_path / "out.qcow2"))


def test_zero_clusters_are_not_stored_and_incompressible_ones_are_stored_whole(tmp_path):
    src = write_sparse(tmp_path / "src.img", 8 * MIB, [(0, text(MIB)), (4 * MIB, noise(MIB, b"n"))])
    writer, end, _finals = stream(src, str(tmp_path / "out.qcow2"))
    assert writer.stored_clusters == {"compressed": MIB // CLUSTER, "uncompressed": MIB // CLUSTER}
    assert end < 2 * MIB, "zeros were stored"


@pytest.mark.parametrize("cluster_size", [4096, 262144, 2 * MIB])
def test_other_cluster_sizes(tmp_path, cluster_size):
    src = write_sparse(tmp_path / "src.img", 12 * MIB, [(MIB, text(3 * MIB)), (9 * MIB, noise(MIB, b"c"))])
    stream(src, str(tmp_path / "out.qcow2"), cluster_size=cluster_size)
    assert_same(src, str(tmp_path / "out.qcow2"))
    assert json.loads(qemu_img("info", "--output=json", str(tmp_path / "out.qcow2")).stdout)["cluster-size"] == cluster_size


def test_several_l2_tables_and_data_past_the_first_refcount_block(tmp_path):
    # 4 KiB clusters: one L2 table maps 2 MiB and one refcount block counts 8 MiB of file.
    pieces = [(offset, noise(1536 * 1024, b"%d" % offset)) for offset in range(0, 24 * MIB, 3 * MIB)]
    src = write_sparse(tmp_path / "src.img", 30 * MIB, pieces)
    writer, end, _finals = stream(src, str(tmp_path / "out.qcow2"), cluster_size=4096)
    assert end > 8 * MIB and writer.layout.l1_size == 15
    assert_same(src, str(tmp_path / "out.qcow2"))


def test_sparse_disk_far_past_one_l2_table(tmp_path):
    src = write_sparse(tmp_path / "src.img", 3 * 1024 * MIB, [(7, text(CLUSTER)), (1536 * MIB, text(MIB, b"m")), (3 * 1024 * MIB - 4096, b"z" * 4096)])
    writer, _end, _finals = stream(src, str(tmp_path / "out.qcow2"))
    assert writer.layout.l1_size == 6
    assert_same(src, str(tmp_path / "out.qcow2"))


@pytest.mark.parametrize("library", ["zlib", "zlib-ng"])
def test_both_deflate_libraries_write_images_qemu_reads(tmp_path, library):
    src = write_sparse(tmp_path / "src.img", 6 * MIB, [(0, text(2 * MIB)), (3 * MIB, noise(CLUSTER, b"q"))])
    stream(src, str(tmp_path / "out.qcow2"), library=library)
    assert_same(src, str(tmp_path / "out.qcow2"))


def test_zstd_images(tmp_path):
    src = write_sparse(tmp_path / "src.img", 6 * MIB, [(0, text(2 * MIB)), (3 * MIB, noise(CLUSTER, b"q"))])
    stream(src, str(tmp_path / "out.qcow2"), compression_type="zstd")
    assert_same(src, str(tmp_path / "out.qcow2"))
    info = json.loads(qemu_img("info", "--output=json", str(tmp_path / "out.qcow2")).stdout)
    assert info["format-specific"]["data"]["compression-type"] == "zstd"


def test_same_input_gives_the_same_bytes(tmp_path):
    # Resuming an upload relies on this: a second conversion reproduces the parts already sent.
    src = write_sparse(tmp_path / "src.img", 8 * MIB, [(0, text(3 * MIB)), (5 * MIB, noise(MIB, b"d"))])
    stream(src, str(tmp_path / "a.qcow2"), threads=2)
    stream(src, str(tmp_path / "b.qcow2"), threads=1)
    assert (tmp_path / "a.qcow2").read_bytes() == (tmp_path / "b.qcow2").read_bytes()


def test_layout_arithmetic():
    layout = _qcow2.Layout(2 * 1024 * MIB)
    assert (layout.cluster_bits, layout.l2_entries, layout.guest_clusters, layout.l1_size) == (16, 8192, 32768, 4)
    assert (layout.l1_offset, layout.refcount_table_offset, layout.data_start) == (CLUSTER, 2 * CLUSTER, 3 * CLUSTER)
    big = _qcow2.Layout(1024 ** 4)  # 1 TiB: an 8 KiB L1 table, a refcount table that covers the worst case
    assert big.l1_size == 2048 and big.refcount_table_clusters == 1
    assert big.upper_bound(2 ** 24) > 1.5 * 1024 ** 4 > big.uncompressed_size(2 ** 24) > 1024 ** 4
    assert _qcow2.Layout(0).l1_size == 1


def test_padding_worst_case_stays_under_the_upper_bound(tmp_path):
    # Compressible and incompressible clusters alternate: every whole cluster is padded to alignment.
    pieces = [(n * CLUSTER, text(CLUSTER, b"%d" % n) if n % 2 == 0 else noise(CLUSTER, b"%d" % n)) for n in range(64)]
    src = write_sparse(tmp_path / "src.img", 64 * CLUSTER, pieces)
    writer, end, _finals = stream(src, str(tmp_path / "out.qcow2"))
    assert writer.stored_clusters == {"compressed": 32, "uncompressed": 32}
    assert writer.layout.uncompressed_size(64) < end <= writer.layout.upper_bound(64)
    assert_same(src, str(tmp_path / "out.qcow2"))


def test_disks_too_large_for_the_cluster_size_are_refused_up_front():
    with pytest.raises(ValueError, match="too large for cluster_size 4096.*use a larger cluster_size"):
        _qcow2.Layout(8 * 1024 ** 4, 4096)
    assert _qcow2.Layout(15 * 1024 ** 4).refcount_table_clusters == 1


@pytest.mark.parametrize("bad", [512, 3000, 65537, 4 * MIB])
def test_bad_cluster_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="cluster_size must be a power of two from 4096 to 2097152"):
        _qcow2.Layout(MIB, bad)


def test_compressed_entry_encodes_offset_and_sector_count():
    layout = _qcow2.Layout(MIB)
    entry = layout.compressed_entry(1000, 600)  # bytes 1000..1599: sectors 1..3, two beyond the first
    assert entry & _qcow2.OFLAG_COMPRESSED and not entry & _qcow2.OFLAG_COPIED
    assert entry & ((1 << 54) - 1) == 1000
    assert (entry >> 54) & 0xFF == 2


def test_clusters_must_come_in_order_and_whole(tmp_path):
    writer = _qcow2.StreamWriter(_qcow2.Layout(MIB), lambda d: None, lambda d, o: None)
    writer.add(3, b"x", True)
    with pytest.raises(ValueError, match="out of order"):
        writer.add(2, b"x", True)
    with pytest.raises(ValueError, match="must be 65536 bytes"):
        writer.add(4, b"short", False)
    with pytest.raises(ValueError, match="past the end"):
        writer.add(16, b"x", True)


def test_chunk_plan_is_aligned_in_order_and_reads_nothing_twice():
    chunks = _stream.chunk_plan([(100, 5000), (6000, 70000), (3 * MIB, 3 * MIB + 10)], 4 * MIB, CLUSTER, chunk_bytes=2 * CLUSTER)
    assert chunks == [(0, CLUSTER), (CLUSTER, CLUSTER), (3 * MIB, CLUSTER)]
    covered = [(o, o + n) for o, n in _stream.chunk_plan([(0, 5 * MIB)], 5 * MIB + 7, CLUSTER)]
    assert covered[0][0] == 0 and covered[-1][1] == 5 * MIB
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))


def test_data_extents_skip_holes(tmp_path):
    src = write_sparse(tmp_path / "src.img", 64 * MIB, [(8 * MIB, b"a" * MIB), (40 * MIB, b"b" * 4096)])
    fd = os.open(src, os.O_RDONLY)
    try:
        extents = list(_files.data_extents(fd, 64 * MIB))
    finally:
        os.close(fd)
    allocated = sum(end - start for start, end in extents)
    assert MIB + 4096 <= allocated < 4 * MIB, extents
    assert extents[0][0] <= 8 * MIB and extents[-1][1] >= 40 * MIB + 4096


def test_a_source_that_shrinks_while_read_is_an_error(tmp_path):
    src = write_sparse(tmp_path / "src.img", 4 * MIB, [(0, text(4 * MIB))])
    fd = os.open(src, os.O_RDONLY)
    try:
        os.truncate(src, MIB)
        with pytest.raises(OSError, match="the source shrank"):
            _stream.compress_chunk(fd, 2 * MIB, MIB, CLUSTER, _qcow2.make_compressor("zlib")[0])
    finally:
        os.close(fd)
