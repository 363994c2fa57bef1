# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""What the OpenStack emulator's Nova and Cinder do with the real Glance (RegionOne), with the caller's token, as the
real services do: Nova's ``createImage`` of an image-backed server and Cinder's volume made from an image.

createImage (compute API reference, "Create Image (createImage Action)"): 202 with ``{"image_id"}`` from 2.45 (before:
a ``Location`` header); the server must be ``ACTIVE`` (409 otherwise); the image is made at once (``queued``) with
the given metadata as properties plus ``image_type=snapshot``, ``instance_uuid``, ``base_image_ref``, and the server's
root disk is uploaded in the background (task_state ``image_uploading``), so it becomes ``active`` later. A raw disk
makes a raw image (Nova's rbd/raw backends). A volume from an image (``imageRef``) is ``downloading`` while Cinder
reads the image from Glance (a qcow2 is converted to raw), and must be at least the image's size.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import urllib.error
import urllib.request

from tests.emulators import openstack_server as base

GB = 1024 ** 3


def glance(cloud, method, path, token, body=None, data=None, content_type="application/json"):
    """One call to the real Glance with the caller's token: ``(status, answer)``; a file download answers a response."""
    headers = {"X-Auth-Token": token}
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(cloud.glance_url + path, data=data, method=method, headers=headers)
    try:  # the test's Glance, on loopback; a download's response is closed by the caller
        answer = urllib.request.urlopen(request, timeout=120)  # noqa: S310 pylint: disable=consider-using-with
    except urllib.error.HTTPError as exc:
        raise base.Fault(exc.code, "Glance: %s" % " ".join(exc.read().decode(errors="replace").split())[:300]) from None
    if path.endswith("/file") and method == "GET":
        return answer.status, answer
    with answer:
        text = answer.read()
    return answer.status, (json.loads(text) if text else None)


def background(cloud, work):
    thread = threading.Thread(target=work, name="openstack-emulator-job", daemon=True)
    cloud.jobs.append(thread)
    thread.start()


def create_image(cloud, server, spec, token):
    """createImage: the image, queued, at once; the upload of the server's root disk in the background."""
    if not server.get("image_id"):
        raise base.Fault(400, "The emulator's createImage takes image-backed servers only; snapshot a volume-backed one in Cinder")
    if server["status"] != "ACTIVE" or server.get("task_state"):
        raise base.Fault(409, "Cannot 'createImage' instance %s while it is in task_state %s" % (server["id"], server.get("task_state")))
    props = {str(k): str(v) for k, v in (spec.get("metadata") or {}).items()}
    props.update(image_type="snapshot", instance_uuid=server["id"], base_image_ref=server["image_id"])
    _unused, made = glance(cloud, "POST", "/v2/images", token, body=dict(props, name=spec["name"], disk_format="raw", container_format="bare"))
    server["task_state"] = "image_uploading"
    frozen = "%s.%s" % (server["disk"], made["id"])  # the disk as it is at the request, uploaded while the server runs on
    subprocess.run(["cp", "--sparse=always", "--reflink=auto", server["disk"], frozen], check=True)

    def upload():
        try:
            with open(frozen, "rb") as handle:
                glance(cloud, "PUT", "/v2/images/%s/file" % made["id"], token, data=handle, content_type="application/octet-stream")
        except base.Fault:
            pass  # the image stays queued, as when Nova's upload fails; a waiting client times out or sees it killed
        finally:
            os.unlink(frozen)
            with cloud.lock:
                server["task_state"] = None
    background(cloud, upload)
    return made["id"]


def volume_from_image(cloud, rec, image_id, token):
    """A volume's bytes from a Glance image (downloaded, a qcow2 converted to raw) in the background: ``downloading`` -> ``available``."""
    _unused, image = glance(cloud, "GET", "/v2/images/%s" % image_id, token)
    if image.get("status") != "active":
        raise base.Fault(400, "Invalid image: Image %s is not active." % image_id)
    if (image.get("size") or 0) > rec["size"] * GB or (image.get("min_disk") or 0) > rec["size"]:
        raise base.Fault(400, "Invalid input received: Size of specified image %d GB is larger than volume size %d GB."
                         % (-(-(image.get("size") or 0) // GB), rec["size"]))
    base.touch(rec, status="downloading")
    rec["volume_image_metadata"] = {"image_id": image_id, "image_name": image.get("name"), "disk_format": image.get("disk_format")}
    path = cloud.block.path(rec["id"])

    def download():
        status = "available"
        try:
            _unused, answer = glance(cloud, "GET", "/v2/images/%s/file" % image_id, token)
            zeros = bytes(1 << 20)
            with answer, open(path + ".part", "wb") as handle:
                while True:  # holes stay holes, as Cinder's sparse copy keeps them
                    chunk = answer.read(1 << 20)
                    if not chunk:
                        break
                    if chunk == zeros[:len(chunk)]:
                        handle.seek(len(chunk), os.SEEK_CUR)
                    else:
                        handle.write(chunk)
                handle.truncate()
            if image.get("disk_format") == "qcow2":
                subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", path + ".part", path], check=True)
                os.unlink(path + ".part")
            else:
                os.replace(path + ".part", path)
            os.truncate(path, rec["size"] * GB)
        except (OSError, base.Fault, subprocess.CalledProcessError):
            status = "error"
        with cloud.lock:
            base.touch(rec, status=status)
    background(cloud, download)
