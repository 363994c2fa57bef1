# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Instances, their volume attachments and instance profiles of the VPC emulator.

An attachment is ``attaching`` for the emulator's delay, then ``attached``: only then does the volume
appear as a real block device (a loop device on its file) with a ``virtio-<first 20 chars of the
attachment id>`` link under ``by_id_dir`` (IBM Cloud docs, "Attaching block storage volumes"). DELETE
makes it ``detaching``; when that ends the link and loop device go, then the attachment.
Instances: ``pending`` -> ``starting`` -> ``running``; stop: ``stopping`` -> ``stopped``; delete:
``deleting`` -> gone (with the volumes whose attachment says ``delete_volume_on_instance_delete``).
"""

from __future__ import annotations

import json
import os
import subprocess

from tests.emulators.vpc_server import ApiError, public
from tests.emulators.vpc_storage import drop, new_volume, reference
from tests.emulators.vpc_profiles import INSTANCE_PROFILES, instance_profile


def _link(emu, aid):
    return os.path.join(emu.by_id_dir, "virtio-" + aid[:20])


def expose(emu, rec):
    """Attach for real: a loop device on the volume's file and the by-id link (when the emulator has both dirs)."""
    path = os.path.join(emu.data_dir, rec["volume"]["id"] + ".img") if emu.data_dir else None
    if emu.by_id_dir and path and os.path.exists(path):
        loop = subprocess.run(["losetup", "--find", "--show", path], check=True, capture_output=True, text=True).stdout.strip()
        rec["_loop"] = loop
        os.symlink(loop, _link(emu, rec["id"]))
    rec["status"] = "attached"


def unexpose(emu, rec):
    loop = rec.pop("_loop", None)
    if loop:
        if os.path.lexists(_link(emu, rec["id"])):
            os.unlink(_link(emu, rec["id"]))
        subprocess.run(["losetup", "-d", loop], check=False)


def _volume_context(rec, instance):
    return {"id": rec["id"], "href": rec["href"], "name": rec["name"], "type": rec["type"], "device": rec["device"],
            "delete_volume_on_instance_delete": rec["delete_volume_on_instance_delete"],
            "instance": {"id": instance["id"], "crn": instance["crn"], "href": instance["href"], "name": instance["name"]}}


def _instance_context(rec):
    return {"id": rec["id"], "href": rec["href"], "name": rec["name"], "device": rec["device"], "volume": rec["volume"]}


def new_attachment(emu, instance, volume, name=None, delete_with_instance=False, kind="data", wait=True):
    if volume["attachment_state"] != "unattached" or volume["volume_attachments"]:
        raise ApiError(409, "volume_in_use", "Volume %s is attached to an instance already" % volume["id"])
    if volume["zone"]["name"] != instance["zone"]["name"]:
        raise ApiError(400, "invalid_zone", "Volume %s is in zone %s, the instance in %s"
                       % (volume["id"], volume["zone"]["name"], instance["zone"]["name"]))
    rid_holder = emu.new_record("volume_attachment", instance["_region"], "instances/%s/volume_attachments" % instance["id"],
                                prefix="0717-", name=name or "attachment-" + volume["name"][:40], bandwidth=393,
                                delete_volume_on_instance_delete=bool(delete_with_instance), status="attaching", type=kind,
                                volume=reference(volume, "volume"), _instance=instance["id"])
    rec = rid_holder
    for private in ("crn", "resource_group"):
        rec.pop(private)
    rec["device"] = {"id": rec["id"][:20]}
    volume["volume_attachments"].append(_volume_context(rec, instance))
    volume["attachment_state"], volume["active"] = "attached", True
    instance["volume_attachments"].append(_instance_context(rec))

    def attached(att):
        expose(emu, att)
    if wait:
        emu.later(rec, emu.delay, attached)
    else:
        attached(rec)
    return rec


def remove_attachment(emu, rec, delete_volume=False):
    unexpose(emu, rec)
    emu.forget(rec)
    instance = emu.store.get("instance", {}).get(rec["_instance"])
    if instance:
        instance["volume_attachments"] = [a for a in instance["volume_attachments"] if a["id"] != rec["id"]]
    volume = emu.store.get("volume", {}).get(rec["volume"]["id"])
    if volume:
        volume["volume_attachments"] = [a for a in volume["volume_attachments"] if a["id"] != rec["id"]]
        if not volume["volume_attachments"]:
            volume["attachment_state"], volume["active"] = "unattached", False
        if delete_volume:
            drop(emu, volume)


def _network_interface(emu, instance, subnet):
    nic = "0717-" + instance["id"][5:]
    href = instance["href"] + "/network_interfaces/" + nic
    return {"id": nic, "href": href, "name": "eth0", "resource_type": "network_interface",
            "primary_ip": {"address": subnet["_next_ip"](), "href": subnet["href"] + "/reserved_ips/" + nic, "id": nic,
                           "name": "ip-" + nic[-8:], "resource_type": "subnet_reserved_ip"},
            "subnet": reference(subnet, "subnet")}


def _network_attachment(emu, instance):
    """The instance network attachment (newer API) over the same address as its network interface."""
    nic = instance["primary_network_interface"]
    vni = "0717-" + nic["id"][5:13] + instance["id"][13:]
    return {"id": nic["id"], "href": instance["href"] + "/network_attachments/" + nic["id"], "name": "eth0",
            "resource_type": "instance_network_attachment", "primary_ip": nic["primary_ip"], "subnet": nic["subnet"],
            "virtual_network_interface": {"id": vni, "crn": emu.crn(instance["_region"], "virtual-network-interface", vni),
                                          "href": emu.service_url(instance["_region"]) + "/virtual_network_interfaces/" + vni,
                                          "name": instance["name"] + "-vni", "resource_type": "virtual_network_interface"}}


def new_instance(emu, region, body, wait=True):
    from tests.emulators.vpc_network import find_subnet, vpc_reference
    profile = (body.get("profile") or {}).get("name") or "bx2-2x8"
    if profile not in INSTANCE_PROFILES:
        raise ApiError(404, "instance_profile_not_found", "Instance profile %s not found" % profile)
    zone = (body.get("zone") or {}).get("name")
    if not zone:
        raise ApiError(400, "validation_required_field", "zone is required", target={"name": "zone", "type": "field"})
    attachment_spec = (body.get("primary_network_attachment") or {}).get("virtual_network_interface") or {}
    nic_spec = body.get("primary_network_interface") or attachment_spec
    if not (nic_spec.get("subnet") or {}).get("id"):
        raise ApiError(400, "validation_required_field", "primary_network_interface.subnet or "
                       "primary_network_attachment.virtual_network_interface.subnet is required",
                       target={"name": "primary_network_interface", "type": "field"})
    subnet = find_subnet(emu, region, nic_spec["subnet"]["id"])
    if subnet["zone"]["name"] != zone:
        raise ApiError(400, "invalid_zone", "Subnet %s is in zone %s, not %s" % (subnet["id"], subnet["zone"]["name"], zone))
    boot = body.get("boot_volume_attachment") or {}
    boot_volume = boot.get("volume") or {}
    image = None
    if body.get("image"):
        image = emu.find("image", region, body["image"].get("id", ""))
    source_snapshot = None
    if boot_volume.get("source_snapshot"):
        source_snapshot = emu.find("snapshot", region, boot_volume["source_snapshot"].get("id", ""))
    if image is None and source_snapshot is None and not body.get("_seed"):
        raise ApiError(400, "validation_required_field", "image or boot_volume_attachment.volume.source_snapshot is required",
                       target={"name": "image", "type": "field"})
    cpus, memory = INSTANCE_PROFILES[profile][:2]
    name = body.get("name") or "instance-" + os.urandom(4).hex()
    if any(r["name"] == name for r in emu.records("instance", region)):
        raise ApiError(409, "validation_unique_failed", "The instance name %s is already in use" % name)
    rec = emu.new_record(
        "instance", region, "instances", prefix="0717_", name=name, availability={"class": "standard"},
        availability_policy={"host_failure": "restart", "preemption": "stop"}, bandwidth=4000, cluster_network_attachments=[],
        confidential_compute_mode="disabled", disks=[], enable_secure_boot=False, health_reasons=[], health_state="ok",
        lifecycle_reasons=[], lifecycle_state="pending", memory=memory,
        metadata_service={"enabled": False, "protocol": "http", "response_hop_limit": 1}, network_attachments=[],
        profile={"name": profile, "href": emu.service_url(region) + "/instance/profiles/" + profile, "resource_type": "instance_profile"},
        reservation_affinity={"policy": "disabled", "pool": []}, resource_type="instance", software_attachments=[],
        startable=True, status="pending", status_reasons=[], threads_per_core=2, total_network_bandwidth=3000,
        total_volume_bandwidth=1000, vcpu={"architecture": "amd64", "count": cpus, "manufacturer": "intel", "percentage": 100},
        volume_attachments=[], volume_bandwidth_qos_mode="pooled", vpc=vpc_reference(emu, subnet["vpc"]["id"]),
        zone=emu.zone_ref(region, zone))
    if image is not None:
        rec["image"] = reference(image, "image")
    rec["primary_network_interface"] = _network_interface(emu, rec, subnet)
    rec["network_interfaces"] = [rec["primary_network_interface"]]
    if attachment_spec:
        rec["primary_network_attachment"] = _network_attachment(emu, rec)
        rec["network_attachments"] = [rec["primary_network_attachment"]]
    volume = new_volume(emu, region, boot_volume.get("name") or name + "-boot", boot_volume.get("capacity") or (
        source_snapshot["minimum_capacity"] if source_snapshot else 100), zone,
        (boot_volume.get("profile") or {}).get("name") or "general-purpose", boot_volume.get("user_tags"), source_snapshot, wait=False)
    volume["_bootable"] = True
    if image is not None:
        volume["source_image"] = reference(image, "image")
        if image.get("operating_system"):
            volume["operating_system"] = image["operating_system"]
        _copy_image(emu, image, volume)
    elif source_snapshot is not None and source_snapshot.get("operating_system"):
        volume["operating_system"] = source_snapshot["operating_system"]
    elif body.get("_operating_system"):
        volume["operating_system"] = operating_system(emu, region, body["_operating_system"])
    attachment = new_attachment(emu, rec, volume, boot.get("name") or name + "-boot-attachment",
                                boot.get("delete_volume_on_instance_delete", True), kind="boot", wait=False)
    rec["boot_volume_attachment"] = _instance_context(attachment)
    for extra in body.get("volume_attachments") or []:
        data = emu.find("volume", region, (extra.get("volume") or {}).get("id", ""))
        new_attachment(emu, rec, data, extra.get("name"), extra.get("delete_volume_on_instance_delete"), wait=False)
    if not wait:
        rec.update(status="running", lifecycle_state="stable")
    elif emu.take_failure("instance"):
        emu.later(rec, emu.delay, {"status": "failed", "lifecycle_state": "failed", "health_state": "faulted",
                                   "status_reasons": [{"code": "cannot_start_capacity", "message": "No capacity in the zone"}]})
    else:
        emu.later(rec, emu.delay / 2, {"status": "starting"})
        emu.later(rec, emu.delay, {"status": "running", "lifecycle_state": "stable"})
    return rec


def operating_system(emu, region, name):
    """The operating system called ``name``: the images module's catalog record when it has one, else one made from
    the name (``<family>-<version>-<architecture>``, e.g. ``ubuntu-22-04-amd64``)."""
    from tests.emulators import vpc_images_os  # the images module owns the catalog
    if name in vpc_images_os.CATALOG:
        return vpc_images_os.record(emu, region, name)
    parts = name.split("-")
    return {"name": name, "href": emu.service_url(region) + "/operating_systems/" + name, "architecture": parts[-1],
            "display_name": " ".join(parts[:-1]).title(), "family": parts[0].title() + " Linux", "vendor": parts[0].title(),
            "version": ".".join(parts[1:-1]) or "1", "dedicated_host_only": False, "allow_user_image_creation": True,
            "user_data_format": "cloud_init"}


def _copy_image(emu, image, volume):
    source = os.path.join(emu.data_dir, image["id"] + ".img") if emu.data_dir else None
    if source and os.path.exists(source):
        import shutil
        shutil.copyfile(source, os.path.join(emu.data_dir, volume["id"] + ".img"))


def register(emu):
    def attach(region, instance_id, volume_id, name=None):
        """Attach now (a test helper): attached at once, loop device and link made."""
        with emu.lock:
            instance = emu.find("instance", region, instance_id)
            return public(new_attachment(emu, instance, emu.find("volume", region, volume_id), name, wait=False))

    def detach(aid):
        with emu.lock:
            rec = emu.store.get("volume_attachment", {}).get(aid)
            if rec:
                remove_attachment(emu, rec)

    def seed_instance(region, name=None, zone=None, profile="bx2-2x8", boot_capacity=100, vpc_id=None, subnet_id=None,
                      operating_system_name="ubuntu-22-04-amd64"):
        from tests.emulators.vpc_network import default_subnet
        with emu.lock:
            zone = zone or region + "-1"
            subnet_id = subnet_id or default_subnet(emu, region, zone, vpc_id)["id"]
            return public(new_instance(emu, region, {"name": name, "zone": {"name": zone}, "profile": {"name": profile},
                                                     "primary_network_interface": {"subnet": {"id": subnet_id}},
                                                     "boot_volume_attachment": {"volume": {"capacity": boot_capacity}},
                                                     "_seed": True, "_operating_system": operating_system_name}, wait=False))

    emu.attach, emu.detach, emu.seed_instance = attach, detach, seed_instance

    def list_instances(region, params, query, body, headers):
        items = emu.records("instance", region)
        for key, path in (("name", ("name",)), ("vpc.id", ("vpc", "id")), ("vpc.crn", ("vpc", "crn")), ("vpc.name", ("vpc", "name")),
                          ("resource_group.id", ("resource_group", "id")), ("zone.name", ("zone", "name"))):
            if key in query:
                items = [i for i in items if (i[path[0]] if len(path) == 1 else i[path[0]][path[1]]) == query[key]]
        return 200, emu.page(region, "instances", items, query)

    def create_instance(region, params, query, body, headers):
        return 201, new_instance(emu, region, dict(body or {}, _seed=False))

    def delete_instance(region, params, query, body, headers):
        rec = emu.find("instance", region, params["id"])
        if rec["status"] == "deleting":
            return 204, None
        rec.update(status="deleting", lifecycle_state="deleting")

        def gone(inst):
            for att in [a for a in emu.store.get("volume_attachment", {}).values() if a["_instance"] == inst["id"]]:
                remove_attachment(emu, att, att["delete_volume_on_instance_delete"])
            emu.forget(inst)
        emu.later(rec, emu.delay, gone)
        return 204, None

    def instance_action(region, params, query, body, headers):
        rec = emu.find("instance", region, params["id"])
        kind = (body or {}).get("type")
        if kind not in ("start", "stop", "reboot"):
            raise ApiError(400, "validation_enum", "type must be start, stop or reboot", target={"name": "type", "type": "field"})
        if rec["status"] in ("pending", "deleting", "failed"):
            raise ApiError(409, "invalid_state", "Instance %s is %s" % (rec["id"], rec["status"]))
        steps = {"start": ("starting", "running"), "stop": ("stopping", "stopped"), "reboot": ("restarting", "running")}[kind]
        rec["status"] = steps[0]
        emu.later(rec, emu.delay, {"status": steps[1]})
        action = {"id": os.urandom(16).hex(), "href": rec["href"] + "/actions/" + kind, "created_at": rec["created_at"],
                  "status": "pending", "type": kind, "force": bool((body or {}).get("force"))}
        return 201, action

    def _instance(region, params):
        return emu.find("instance", region, params["instance_id"])

    def list_attachments(region, params, query, body, headers):
        instance = _instance(region, params)
        items = [a for a in emu.records("volume_attachment", region) if a["_instance"] == instance["id"]]
        return 200, {"volume_attachments": items}

    def create_attachment(region, params, query, body, headers):
        instance = _instance(region, params)
        body = body or {}
        spec = body.get("volume") or {}
        if spec.get("id") or spec.get("crn") or spec.get("href"):
            rid = spec.get("id") or (spec.get("crn") or spec.get("href")).replace("/", ":").rsplit(":", 1)[1]
            volume = emu.find("volume", region, rid)
            if volume["status"] != "available":
                raise ApiError(409, "volume_not_available", "Volume %s is %s, not available" % (volume["id"], volume["status"]))
        elif spec.get("source_snapshot") or spec.get("capacity"):
            snap = None
            if spec.get("source_snapshot"):
                snap = emu.find("snapshot", region, spec["source_snapshot"].get("id", ""))
                if snap["lifecycle_state"] != "stable":
                    raise ApiError(409, "snapshot_not_stable", "Snapshot %s is %s, not stable" % (snap["id"], snap["lifecycle_state"]))
            volume = new_volume(emu, region, spec.get("name"), spec.get("capacity") or snap["minimum_capacity"],
                                instance["zone"]["name"], (spec.get("profile") or {}).get("name") or "general-purpose",
                                spec.get("user_tags"), snap, wait=False)
        else:
            raise ApiError(400, "validation_required_field", "volume.id or volume.source_snapshot/capacity is required",
                           target={"name": "volume", "type": "field"})
        return 201, new_attachment(emu, instance, volume, body.get("name"), body.get("delete_volume_on_instance_delete"))

    def get_attachment(region, params, query, body, headers):
        instance = _instance(region, params)
        rec = emu.find("volume_attachment", region, params["id"])
        if rec["_instance"] != instance["id"]:
            raise ApiError(404, "volume_attachment_not_found", "Volume attachment %s not found" % params["id"])
        return 200, rec

    def update_attachment(region, params, query, body, headers):
        rec = get_attachment(region, params, query, body, headers)[1]
        for field in ("name", "delete_volume_on_instance_delete"):
            if field in (body or {}):
                rec[field] = body[field]
        return 200, rec

    def delete_attachment(region, params, query, body, headers):
        rec = get_attachment(region, params, query, body, headers)[1]
        if rec["type"] == "boot":
            raise ApiError(409, "volume_attachment_boot", "The boot volume attachment cannot be deleted")
        if rec["status"] == "detaching":
            return 204, None
        rec["status"] = "detaching"
        emu.later(rec, emu.delay, lambda att: remove_attachment(emu, att))
        return 204, None

    def list_profiles(region, params, query, body, headers):
        items = [instance_profile(emu, region, name) for name in INSTANCE_PROFILES]
        return 200, emu.page(region, "profiles", items, query, path="instance/profiles", key="name")

    def get_profile(region, params, query, body, headers):
        if params["name"] not in INSTANCE_PROFILES:
            raise ApiError(404, "instance_profile_not_found", "Instance profile %s not found" % params["name"])
        return 200, instance_profile(emu, region, params["name"])

    def seed_instance_control(params, query, raw):
        spec = json.loads(raw or b"{}")
        region = spec.pop("region", None) or emu.regions[0]
        return 201, seed_instance(region, **spec)

    def stop_all():
        for rec in list(emu.store.get("volume_attachment", {}).values()):
            unexpose(emu, rec)

    emu.route("GET", "/instances", list_instances)
    emu.route("POST", "/instances", create_instance)
    emu.route("GET", "/instances/{id}", emu.getter("instance"))
    emu.route("PATCH", "/instances/{id}", emu.updater("instance", ("name",)))
    emu.route("DELETE", "/instances/{id}", delete_instance)
    emu.route("POST", "/instances/{id}/actions", instance_action)
    emu.route("GET", "/instances/{instance_id}/volume_attachments", list_attachments)
    emu.route("POST", "/instances/{instance_id}/volume_attachments", create_attachment)
    emu.route("GET", "/instances/{instance_id}/volume_attachments/{id}", get_attachment)
    emu.route("PATCH", "/instances/{instance_id}/volume_attachments/{id}", update_attachment)
    emu.route("DELETE", "/instances/{instance_id}/volume_attachments/{id}", delete_attachment)
    emu.route("GET", "/instance/profiles", list_profiles)
    emu.route("GET", "/instance/profiles/{name}", get_profile)
    emu.control("POST", "/instances", seed_instance_control)
    emu.on_stop(stop_all)
