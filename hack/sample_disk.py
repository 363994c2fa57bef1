"""Build a realistic source disk: a real ext4 filesystem image, partly filled with real files.

The files are real system files (documentation, libraries, Python sources), so
the image compresses like a server disk does; the rest of the disk is left empty
(sparse), as on a real volume. No mount and no root needed: ``mkfs.ext4 -d``
populates the filesystem from a directory.

    sample_disk.py IMAGE --size 512M --fill 0.4
    sample_disk.py IMAGE --change        # write a new file into it (a new disk state)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

SOURCES = ("/usr/share/doc", "/usr/lib/python3", "/usr/share/locale", "/usr/lib", "/usr/share")
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text):
    text = text.strip().upper().rstrip("IB")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(text)


def gather(staging, budget):
    """Hard-link (or copy) real files into ``staging`` until ``budget`` bytes are taken."""
    taken = 0
    seen = set()
    for top in SOURCES:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if not os.path.isfile(path) or os.path.islink(path) or info.st_ino in seen or info.st_size == 0:
                    continue
                if taken + info.st_size > budget:
                    return taken
                seen.add(info.st_ino)
                target = os.path.join(staging, os.path.relpath(path, "/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                try:
                    os.link(path, target)
                except OSError:
                    try:
                        shutil.copyfile(path, target)
                    except OSError:
                        continue
                taken += info.st_size
    return taken


def build(image, size, fill):
    staging = tempfile.mkdtemp(prefix="sample-disk-", dir=os.path.dirname(os.path.abspath(image)))
    try:
        taken = gather(staging, int(size * fill))
        if os.path.exists(image):
            os.unlink(image)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "sampleroot", "-E", "root_owner=0:0", "-d", staging, image, str(size // 1024) + "k"],
            check=True,
            env=dict(os.environ, E2FSPROGS_FAKE_TIME=str(int(time.time()))),
        )
        return taken
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def change(image):
    """Write a new file into the filesystem (debugfs, no mount): a new state of the disk."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as note:
        note.write("changed at %s\n" % stamp)
        note.write(os.urandom(4096).hex())
    try:
        subprocess.run(["debugfs", "-w", "-R", "write %s /changed-%s.txt" % (note.name, stamp), image],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        os.unlink(note.name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--size", default="512M", help="virtual size, e.g. 512M, 2G")
    parser.add_argument("--fill", type=float, default=0.4, help="fraction of the disk filled with real files")
    parser.add_argument("--change", action="store_true", help="add a file to an existing image instead")
    args = parser.parse_args(argv)
    if args.change:
        change(args.image)
        print("changed %s" % args.image)
        return 0
    size = parse_size(args.size)
    taken = build(args.image, size, args.fill)
    print("built %s: %d MiB virtual, %d MiB of real files" % (args.image, size >> 20, taken >> 20))
    return 0


if __name__ == "__main__":
    sys.exit(main())
