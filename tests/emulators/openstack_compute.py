# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Nova v2.1 servers and their volume attachments, of the OpenStack emulator (tests/emulators/openstack_server.py).

From the compute API reference: ``GET /servers[/detail]`` filters ``name`` as a regular expression (so an exact name is
the client's job), ``os-extended-volumes:volumes_attached`` lists a server's volumes; ``POST
/servers/{id}/os-volume_attachments`` needs an ``available`` volume and answers at once with Nova's *guess* of the device
(``/dev/vdX``) while the volume goes ``reserved`` -> ``in-use``; ``DELETE .../os-volume_attachments/{volume}`` refuses the
root volume, and the volume goes ``detaching`` -> ``available``. On a conversion host the attachment is real (see the
server module): the guest sees the volume by its serial, not by Nova's device name.
"""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse

from tests.emulators import openstack_images
from tests.emulators import openstack_server as base

MIB = 1024 * 1024


class Compute:
    def __init__(self, cloud):
        self.cloud = cloud
        self.loops = {}  # volume id -> loop device (attached to a conversion host)

    def seed(self, name, data, size_gb, conversion_host, zone, image_id=None):
        sid = self.cloud.new_id()
        server = {"id": sid, "name": name, "status": "ACTIVE", "zone": zone, "created": base.now(), "conversion_host": conversion_host,
                  "attached": [], "image_id": image_id, "size_gb": size_gb, "task_state": None}
        self.cloud.servers[sid] = server
        if image_id:  # image-backed: the root disk is a file of the hypervisor, no volume
            server["disk"] = os.path.join(self.cloud.data_dir, "instance-%s-disk" % sid)
            with open(server["disk"], "wb") as handle:
                handle.write(data)
            # Smaller than the flavor's disk (a shortcut of the emulator): createImage uploads and Cinder downloads every byte.
            os.truncate(server["disk"], -(-max(len(data), 1) // MIB) * MIB)
            return dict(server)
        boot = self.cloud.block.new_volume("", size_gb, None, zone=zone, data=data, bootable=True)
        att = {"volume_id": boot["id"], "device": "/dev/vda", "attachment_id": self.cloud.new_id(), "bdm_uuid": self.cloud.new_id()}
        server["attached"].append(att)
        self._in_use(server, boot, att, expose=False)  # the host's own root disk is not one the tests read
        return dict(server, boot_volume=boot["id"])

    # --- routing ----------------------------------------------------------------------------------------------------------------
    def route(self, method, rest, query, body, micro, project):
        action = re.match(r"^/servers/([0-9a-f-]{36})/action$", rest)
        if action and method == "POST":
            server = self.cloud.servers.get(action.group(1))
            if server is None:
                raise base.Fault(404, "Instance %s could not be found." % action.group(1))
            if "createImage" not in body:
                raise base.Fault(400, "The emulator serves the createImage action only")
            image_id = openstack_images.create_image(self.cloud, server, body["createImage"], self.cloud.request_token)
            return 202, {"image_id": image_id} if micro >= (2, 45) else None
        match = re.match(r"^/servers(?:/(detail|[0-9a-f-]{36}))?(?:/os-volume_attachments(?:/([0-9a-f-]{36}))?)?$", rest)
        if not match:
            raise base.Fault(404, "The resource could not be found.")
        ident, volume_id = match.groups()
        attachments = "/os-volume_attachments" in rest
        if ident in (None, "detail"):
            if method != "GET":
                raise base.Fault(405, "Method not allowed")
            wanted = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
            found = [s for s in self.cloud.servers.values() if not wanted.get("name") or re.search(wanted["name"], s["name"])]
            return 200, {"servers": [self.view(s, micro, detail=ident == "detail") for s in sorted(found, key=lambda s: s["created"])]}
        server = self.cloud.servers.get(ident)
        if server is None:
            raise base.Fault(404, "Instance %s could not be found." % ident)
        if not attachments:
            if method != "GET":
                raise base.Fault(405, "Method not allowed")
            return 200, {"server": self.view(server, micro)}
        if method == "GET" and volume_id is None:
            return 200, {"volumeAttachments": [self._attachment_view(server, a, micro) for a in server["attached"]]}
        if method == "POST":
            return 200, {"volumeAttachment": self._attach(server, body["volumeAttachment"], micro)}
        found = next((a for a in server["attached"] if a["volume_id"] == volume_id), None)
        if found is None:
            raise base.Fault(404, "volume_id not found: %s" % volume_id)
        if method == "GET":
            return 200, {"volumeAttachment": self._attachment_view(server, found, micro)}
        if method == "DELETE":
            self._detach(server, found)
            return 202, None
        raise base.Fault(405, "Method not allowed")

    # --- views ------------------------------------------------------------------------------------------------------------------
    def view(self, server, micro, detail=True):
        links = [{"rel": "self", "href": "servers/%s" % server["id"]}]
        if not detail:
            return {"id": server["id"], "name": server["name"], "links": links}
        flavor = {"original_name": "m1.small", "vcpus": 1, "ram": 2048, "disk": server["size_gb"] if server["image_id"] else 0, "ephemeral": 0,
                  "swap": 0, "extra_specs": {}}
        view = {"id": server["id"], "name": server["name"], "status": server["status"], "OS-EXT-AZ:availability_zone": server["zone"],
                "image": {"id": server["image_id"], "links": []} if server["image_id"] else "", "created": server["created"],
                "updated": server["created"], "metadata": {}, "addresses": {}, "links": links, "flavor": flavor,
                "OS-EXT-STS:vm_state": "active", "OS-EXT-STS:power_state": 1, "OS-EXT-STS:task_state": server["task_state"], "hostId": "",
                "key_name": None,
                "os-extended-volumes:volumes_attached": [{"id": a["volume_id"], "delete_on_termination": False} for a in server["attached"]],
                "tenant_id": None, "user_id": None, "accessIPv4": "", "accessIPv6": "", "config_drive": "", "progress": 0}
        if micro >= (2, 26):
            view["tags"] = []
        if micro >= (2, 19):
            view["description"] = None
        if micro >= (2, 9):
            view["locked"] = False
        return view

    @staticmethod
    def _attachment_view(server, att, micro):
        view = {"device": att["device"], "serverId": server["id"], "volumeId": att["volume_id"]}
        if micro < (2, 89):
            view["id"] = att["volume_id"]
        if micro >= (2, 70):
            view["tag"] = None
        if micro >= (2, 79):
            view["delete_on_termination"] = False
        if micro >= (2, 89):
            view.update(attachment_id=att["attachment_id"], bdm_uuid=att["bdm_uuid"])
        return view

    # --- attach / detach --------------------------------------------------------------------------------------------------------
    def _attach(self, server, spec, micro):
        volume = self.cloud.volumes.get(spec.get("volumeId"))
        if volume is None:
            raise base.Fault(404, "Volume %s could not be found." % spec.get("volumeId"))
        if volume["status"] != "available":
            raise base.Fault(400, "Invalid volume: volume '%s' status must be 'available'. Currently in '%s'" % (volume["id"], volume["status"]))
        used = {a["device"] for a in server["attached"]}
        device = next("/dev/vd%s" % c for c in "bcdefghijklmnopqrstuvwxyz" if "/dev/vd%s" % c not in used)
        att = {"volume_id": volume["id"], "device": device, "attachment_id": self.cloud.new_id(), "bdm_uuid": self.cloud.new_id()}
        server["attached"].append(att)
        base.touch(volume, status="reserved")

        def attached():
            if att in server["attached"]:
                base.touch(volume, status="attaching")
                self.cloud.later(lambda: self._in_use(server, volume, att))
        self.cloud.later(attached)
        return self._attachment_view(server, att, micro)

    def _in_use(self, server, volume, att, expose=True):
        base.touch(volume, status="in-use")
        volume["attachments"] = [{"id": volume["id"], "attachment_id": att["attachment_id"], "volume_id": volume["id"], "server_id": server["id"],
                                  "host_name": None, "device": att["device"], "attached_at": base.now()}]
        if expose and server["conversion_host"] and self.cloud.by_id_dir:
            loop = subprocess.run(["losetup", "--find", "--show", self.cloud.block.path(volume["id"])], check=True, capture_output=True,
                                  text=True).stdout.strip()
            self.loops[volume["id"]] = loop
            os.symlink(loop, self.link(volume["id"]))

    def link(self, volume_id):
        return os.path.join(self.cloud.by_id_dir, "virtio-" + volume_id[:20])

    def _detach(self, server, att):
        if att["device"] == "/dev/vda":
            raise base.Fault(400, "Cannot detach a root device volume")
        volume = self.cloud.volumes[att["volume_id"]]
        if volume["status"] != "in-use":
            raise base.Fault(400, "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' "
                                  "to detach. Currently in '%s'" % volume["status"])
        base.touch(volume, status="detaching")

        def detached():
            self.unexpose(volume["id"])
            server["attached"].remove(att)
            base.touch(volume, status="available", attachments=[])
        self.cloud.later(detached)

    def unexpose(self, volume_id):
        loop = self.loops.pop(volume_id, None)
        if loop:
            if os.path.lexists(self.link(volume_id)):
                os.unlink(self.link(volume_id))
            subprocess.run(["losetup", "-d", loop], check=False)

    def detach_all(self):
        for volume_id in list(self.loops):
            self.unexpose(volume_id)

    def exposed(self):
        links = sorted(os.listdir(self.cloud.by_id_dir)) if self.cloud.by_id_dir and os.path.isdir(self.cloud.by_id_dir) else []
        return {"loops": sorted(self.loops.values()), "links": links}
