#!/usr/bin/env python
# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A stand-in for PowerVC's ``powervc-image`` CLI, for the tests (standard library and qemu-img only).

It follows the CLI as PowerVC documents it: ``powervc-image list`` prints a table
(``| Name | ID | Status | Volumes | Size | Description | Architecture | OS Distro | Exportable |``) and
``powervc-image export -i IMAGE -p PATH`` writes an OVA: a tar holding an OVF descriptor and the disk
image it references (QCOW2 that qemu-img reads). Like the real one, it needs the rc file's environment
(``OS_AUTH_URL``, ``OS_USERNAME``, ``OS_PASSWORD``) and answers 1 with a message otherwise.

Behaviour comes from the JSON file named by ``POWERVC_IMAGE_CONFIG`` (else ``powervc-image.json`` beside
this script): ``images`` ([{name, id, status, size (GB), exportable}]), ``columns`` (the table's column
order), ``password`` (the one accepted), ``accept_user`` (the only OS_USERNAME accepted), ``fail`` (a message: every call fails with it), ``slow`` (seconds an
export takes), ``disk_mb`` (virtual size of the exported disk). Each call is appended to ``calls.log``
beside the config (argv only, never the environment).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

COLUMNS = ["Name", "ID", "Status", "Volumes", "Size", "Description", "Architecture", "OS Distro", "Exportable"]
OVF = """<?xml version="1.0" encoding="UTF-8"?>
<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <ovf:References><ovf:File ovf:href="{disk}" ovf:id="file1" ovf:size="{size}"/></ovf:References>
  <ovf:DiskSection><ovf:Info>Virtual disks</ovf:Info><ovf:Disk ovf:capacity="{capacity}" ovf:diskId="disk1" ovf:fileRef="file1"
    ovf:format="http://www.gnome.org/~markmc/qcow-image-format.html"/></ovf:DiskSection>
  <ovf:VirtualSystem ovf:id="{name}"><ovf:Info>PowerVC image {name}</ovf:Info><ovf:Name>{name}</ovf:Name></ovf:VirtualSystem>
</ovf:Envelope>
"""


def write_ova(path, name, disk_mb=16, data=b"powervc image test data\n"):
    """An OVA at ``path``: ``<name>.ovf`` and ``<name>-disk1.qcow2`` (``disk_mb`` MiB virtual, ``data`` written at its start)."""
    with tempfile.TemporaryDirectory(prefix="ova-") as tmp:
        raw = os.path.join(tmp, "disk.raw")
        with open(raw, "wb") as handle:
            handle.write(data)
            handle.truncate(disk_mb << 20)
        disk = os.path.join(tmp, "%s-disk1.qcow2" % name)
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, disk], check=True)
        descriptor = OVF.format(disk=os.path.basename(disk), size=os.path.getsize(disk), capacity=disk_mb << 20, name=name).encode()
        partial = path + ".part"
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo("%s.ovf" % name)
            info.size = len(descriptor)
            tar.addfile(info, io.BytesIO(descriptor))
            tar.add(disk, arcname=os.path.basename(disk))
        os.replace(partial, path)


def _config():
    path = os.environ.get("POWERVC_IMAGE_CONFIG") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "powervc-image.json")
    with open(path, encoding="utf-8") as handle:
        return path, json.load(handle)


def _table(config):
    columns = config.get("columns") or COLUMNS
    rows = []
    for image in config.get("images", []):
        values = {"Name": image["name"], "ID": image["id"], "Status": image.get("status", "active"), "Volumes": "1", "Size": str(image.get("size", 1)),
                  "Description": "", "Architecture": "ppc64", "OS Distro": image.get("os", "rhel"), "Exportable": str(image.get("exportable", True))}
        rows.append([values[c] for c in columns])
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |" for cells in [columns] + rows]
    return "\n".join([rule, lines[0], rule] + lines[1:] + [rule])


def main(argv):
    path, config = _config()
    with open(os.path.join(os.path.dirname(path), "calls.log"), "a", encoding="utf-8") as log:
        log.write(json.dumps(argv) + "\n")
    if not os.environ.get("OS_AUTH_URL") or not os.environ.get("OS_USERNAME"):
        sys.stderr.write("Missing value auth-url required for auth plugin password\n")
        return 1
    if config.get("accept_user") and os.environ.get("OS_USERNAME") != config["accept_user"]:  # the account only one rc file names
        sys.stderr.write("The request you have made requires authentication. (HTTP 401) for user %s\n" % os.environ.get("OS_USERNAME"))
        return 1
    if config.get("password") and os.environ.get("OS_PASSWORD") != config["password"]:
        sys.stderr.write("The request you have made requires authentication. (HTTP 401)\n")
        return 1
    if config.get("fail"):
        sys.stderr.write(config["fail"] + "\n")
        return 1
    if argv[:1] == ["list"]:
        print(_table(config))
        return 0
    if argv[:1] == ["export"] and "-i" in argv and "-p" in argv:
        wanted, target = argv[argv.index("-i") + 1], argv[argv.index("-p") + 1]
        image = next((i for i in config.get("images", []) if wanted in (i["name"], i["id"])), None)
        if image is None:
            sys.stderr.write("Image %s not found.\n" % wanted)
            return 1
        if not image.get("exportable", True):
            sys.stderr.write("Image %s is not exportable.\n" % wanted)
            return 1
        time.sleep(config.get("slow", 0))
        write_ova(target, image["name"], config.get("disk_mb", 16))
        print("Image %s exported to %s" % (image["name"], target))
        return 0
    sys.stderr.write("usage: powervc-image {list,export -i IMAGE -p PATH}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
