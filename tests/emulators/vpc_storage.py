# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Volumes and snapshots of the VPC emulator (block storage).

A volume's bytes are a real file ``<data_dir>/<volume id>.img``; a snapshot copies them when it is
taken, a cross-region copy copies the snapshot's file. Lifecycles: volume ``pending`` -> ``available``,
snapshot ``pending`` -> ``stable`` (a cross-region copy stays pending three times as long), both
``deleting`` -> gone; a test can make the next one end in ``failed`` (``emulator.fail_next(kind)``).
"""

from __future__ import annotations

import os
import shutil
import uuid

from tests.emulators.vpc_server import ApiError, public

VOLUME_PROFILES = {"general-purpose": 3, "5iops-tier": 5, "10iops-tier": 10, "custom": None, "sdp": None}
COPY_SLOWER = 3  # a cross-region copy stays pending this many times the delay


def _file(emu, rid):
    return os.path.join(emu.data_dir, rid + ".img") if emu.data_dir else None


def _copy_bytes(emu, source_id, target_id):
    source = _file(emu, source_id)
    if source and os.path.exists(source):
        shutil.copyfile(source, _file(emu, target_id))


def reference(rec, kind):
    return {"id": rec["id"], "crn": rec["crn"], "href": rec["href"], "name": rec["name"], "resource_type": kind}


def _profile_ref(emu, region, name):
    return {"name": name, "href": emu.service_url(region) + "/volume/profiles/" + name}


def _name_free(emu, kind, region, name):
    if any(r["name"] == name for r in emu.records(kind, region)):
        raise ApiError(409, "validation_unique_failed", "The %s name %s is already in use in region %s" % (kind, name, region))


def new_volume(emu, region, name=None, capacity=10, zone=None, profile="general-purpose", user_tags=(), source_snapshot=None,
               wait=True, encryption_key=None):
    """A volume record; with ``wait`` it is ``pending`` for the emulator's delay, else ``available`` now."""
    if profile not in VOLUME_PROFILES:
        raise ApiError(404, "volume_profile_not_found", "Volume profile %s not found" % profile)
    if not 10 <= int(capacity) <= 16000:
        raise ApiError(400, "validation_max_value" if int(capacity) > 16000 else "validation_min_value", "capacity must be between 10 and 16000 GB",
                       target={"name": "capacity", "type": "field"})
    zone = zone or region + "-1"
    if emu.zone_region(zone) != region:
        raise ApiError(404, "zone_not_found", "Zone %s is not in region %s" % (zone, region))
    name = name or "volume-" + uuid.uuid4().hex[:8]
    _name_free(emu, "volume", region, name)
    iops = 3000 if VOLUME_PROFILES[profile] is None else max(3000, VOLUME_PROFILES[profile] * int(capacity))
    rec = emu.new_record(
        "volume", region, "volumes", name=name, capacity=int(capacity), encryption="provider_managed", iops=iops,
        status="pending" if wait else "available", status_reasons=[], profile=_profile_ref(emu, region, profile),
        zone=emu.zone_ref(region, zone), user_tags=list(user_tags or []), active=False, attachment_state="unattached",
        bandwidth=393, busy=False, health_reasons=[], health_state="inapplicable" if wait else "ok", resource_type="volume",
        volume_attachments=[], adjustable_capacity_states=["attached", "unattached"],
        adjustable_iops_states=["attached", "unattached"], software_attachments=[], storage_generation=1)
    if source_snapshot is not None:
        rec["source_snapshot"] = reference(source_snapshot, "snapshot")
        _copy_bytes(emu, source_snapshot["id"], rec["id"])
        # "If unspecified, the snapshot's encryption_key will be used."
        encryption_key = encryption_key or (source_snapshot.get("encryption_key") or {}).get("crn")
    if encryption_key:
        rec.update(encryption="user_managed", encryption_key={"crn": encryption_key})
    if wait:
        if emu.take_failure("volume"):
            emu.later(rec, emu.delay, {"status": "failed", "health_state": "faulted",
                                       "status_reasons": [{"code": "internal_error", "message": "The volume failed to provision"}]})
        else:
            emu.later(rec, emu.delay, {"status": "available", "health_state": "ok"})
    return rec


def write_volume(emu, vid, data):
    """Give a volume bytes (a real file in data_dir, at least 1 MiB)."""
    with open(_file(emu, vid), "wb") as handle:
        handle.write(data)
        handle.truncate(max(len(data), 1 << 20))


def _filter(items, query, fields):
    """Keep the items whose dotted field equals each query value given (``tag`` matches user_tags)."""
    for key, path in fields.items():
        if key not in query:
            continue
        wanted = query[key]

        def value(item, path=path):
            for part in path.split("."):
                item = (item or {}).get(part) if isinstance(item, dict) else None
            return item
        if key == "tag":
            items = [i for i in items if wanted in i.get("user_tags", [])]
        else:
            items = [i for i in items if value(i) == wanted]
    return items


def register(emu):
    def seed_volume(region, name, capacity=10, zone=None, profile="general-purpose", user_tags=()):
        with emu.lock:
            return public(new_volume(emu, region, name, capacity, zone, profile, user_tags, wait=False))

    emu.seed_volume = seed_volume
    emu.write_volume = lambda vid, data: write_volume(emu, vid, data)

    def list_volumes(region, params, query, body, headers):
        items = _filter(emu.records("volume", region), query,
                        {"name": "name", "zone.name": "zone.name", "attachment_state": "attachment_state",
                         "encryption": "encryption", "tag": "tag", "storage_generation": "storage_generation",
                         "operating_system.family": "operating_system.family",
                         "operating_system.architecture": "operating_system.architecture"})
        if "storage_generation" in query:
            items = [i for i in items if str(i["storage_generation"]) == query["storage_generation"]]
        return 200, emu.page(region, "volumes", items, query)

    def create_volume(region, params, query, body, headers):
        body = body or {}
        profile = (body.get("profile") or {}).get("name")
        zone = (body.get("zone") or {}).get("name")
        if not profile or not zone:
            raise ApiError(400, "validation_required_field", "profile and zone are required",
                           target={"name": "profile" if not profile else "zone", "type": "field"})
        snap = None
        if body.get("source_snapshot"):
            snap = _find_snapshot(region, body["source_snapshot"])
            if snap["lifecycle_state"] != "stable":
                raise ApiError(409, "snapshot_not_stable", "Snapshot %s is %s, not stable" % (snap["id"], snap["lifecycle_state"]))
            capacity = body.get("capacity") or snap["minimum_capacity"]
        elif "capacity" not in body:
            raise ApiError(400, "validation_required_field", "capacity is required without source_snapshot",
                           target={"name": "capacity", "type": "field"})
        else:
            capacity = body["capacity"]
        rec = new_volume(emu, region, body.get("name"), capacity, zone, profile, body.get("user_tags"), snap,
                         encryption_key=(body.get("encryption_key") or {}).get("crn"))
        return 201, rec, {"ETag": emu.etag(rec)}

    def grow_only(rec, body):
        if "capacity" in body and int(body["capacity"]) < rec["capacity"]:
            raise ApiError(400, "validation_min_value", "capacity can only grow", target={"name": "capacity", "type": "field"})

    def delete_volume(region, params, query, body, headers):
        rec = emu.find("volume", region, params["id"])
        emu.check_if_match(rec, headers)
        if rec["attachment_state"] != "unattached" or rec["volume_attachments"]:
            raise ApiError(409, "volume_in_use", "Volume %s is attached to an instance; detach it first" % rec["id"])
        rec["status"] = "pending_deletion"
        emu.later(rec, emu.delay, lambda r: drop(emu, r))
        return 204, None

    def _find_snapshot(region, ref):
        """A snapshot by id, crn or href (a crn may name another region: cross-region copy)."""
        if ref.get("crn"):
            parts = ref["crn"].split(":")
            if len(parts) < 10 or parts[8] != "snapshot":
                raise ApiError(400, "bad_field", "%s is not a snapshot CRN" % ref["crn"])
            return emu.find("snapshot", parts[5], parts[9])
        if ref.get("href"):
            return emu.find("snapshot", region, ref["href"].rstrip("/").rsplit("/", 1)[1])
        return emu.find("snapshot", region, ref.get("id", ""))

    def list_snapshots(region, params, query, body, headers):
        items = _filter(emu.records("snapshot", region), query,
                        {"name": "name", "tag": "tag", "resource_group.id": "resource_group.id",
                         "source_volume.id": "source_volume.id", "source_volume.crn": "source_volume.crn",
                         "source_image.id": "source_image.id", "source_image.crn": "source_image.crn",
                         "backup_policy_plan.id": "backup_policy_plan.id", "source_snapshot.id": "source_snapshot.id",
                         "source_snapshot.crn": "source_snapshot.crn",
                         "source_snapshot.remote.region.name": "source_snapshot.remote.region.name",
                         "source_volume.remote.region.name": "source_volume.remote.region.name",
                         "snapshot_consistency_group.id": "snapshot_consistency_group.id"})
        order = query.get("sort", "-created_at")
        if order.lstrip("-") not in ("created_at", "name"):
            raise ApiError(400, "validation_enum", "sort must be created_at or name", target={"name": "sort", "type": "parameter"})
        # Records are kept in creation order; the reference's default is newest first.
        keyed = sorted(enumerate(items), key=lambda pair: (pair[1][order.lstrip("-")], pair[0]), reverse=order.startswith("-"))
        return 200, emu.page(region, "snapshots", [item for _unused, item in keyed], query)

    def create_snapshot(region, params, query, body, headers):
        body = body or {}
        name = body.get("name") or "snapshot-" + uuid.uuid4().hex[:8]
        _name_free(emu, "snapshot", region, name)
        fields = {"bootable": False, "deletable": True, "encryption": "provider_managed", "lifecycle_state": "pending",
                  "resource_type": "snapshot", "user_tags": list(body.get("user_tags") or []), "service_tags": [],
                  "clones": [], "copies": [], "progress": 0, "software_attachments": [], "storage_generation": 1}
        if body.get("source_volume"):
            vol = emu.find("volume", region, body["source_volume"].get("id", ""))
            if vol["status"] != "available":
                raise ApiError(409, "volume_not_available", "Volume %s is %s, not available" % (vol["id"], vol["status"]))
            rec = emu.new_record("snapshot", region, "snapshots", name=name, minimum_capacity=vol["capacity"], size=1,
                                 source_volume=reference(vol, "volume"), bootable=vol.get("_bootable", False), **{
                                     k: v for k, v in fields.items() if k != "bootable"})
            rec["encryption"] = vol["encryption"]  # "the type of encryption used on the source volume"
            if vol.get("encryption_key"):
                rec["encryption_key"] = dict(vol["encryption_key"])
            for extra in ("operating_system", "source_image"):
                if vol.get(extra):
                    rec[extra] = vol[extra]
            _copy_bytes(emu, vol["id"], rec["id"])
            wait = emu.delay
        elif body.get("source_snapshot"):
            source = _find_snapshot(region, body["source_snapshot"])
            if source["_region"] == region:
                raise ApiError(400, "bad_field", "A snapshot copy must come from another region",
                               target={"name": "source_snapshot", "type": "field"})
            if source["lifecycle_state"] != "stable":
                raise ApiError(409, "snapshot_not_stable", "Snapshot %s is %s, not stable" % (source["id"], source["lifecycle_state"]))
            # "A key must be specified if and only if the source snapshot has an encryption type of user_managed."
            key = (body.get("encryption_key") or {}).get("crn")
            if bool(key) != (source["encryption"] == "user_managed"):
                raise ApiError(400, "validation_required_field" if not key else "bad_field",
                               "encryption_key must be given if and only if the source snapshot is user_managed (it is %s)" % source["encryption"],
                               target={"name": "encryption_key", "type": "field"})
            rec = emu.new_record("snapshot", region, "snapshots", name=name, minimum_capacity=source["minimum_capacity"],
                                 size=source["size"], source_volume=dict(source["source_volume"]), **fields)
            rec["bootable"] = source["bootable"]
            if key:
                rec.update(encryption="user_managed", encryption_key={"crn": key})
            rec["source_snapshot"] = dict(reference(source, "snapshot"), remote={"region": {
                "name": source["_region"], "href": "%s/regions/%s" % (emu.service_url(source["_region"]), source["_region"])}})
            rec["source_volume"]["remote"] = {"region": rec["source_snapshot"]["remote"]["region"]}
            if source.get("operating_system"):
                rec["operating_system"] = source["operating_system"]
            source["copies"].append(dict(reference(rec, "snapshot"), remote={"region": {
                "name": region, "href": "%s/regions/%s" % (emu.service_url(region), region)}}))
            _copy_bytes(emu, source["id"], rec["id"])
            wait = emu.delay * COPY_SLOWER
        else:
            raise ApiError(400, "validation_required_field", "source_volume or source_snapshot is required",
                           target={"name": "source_volume", "type": "field"})
        if emu.take_failure("snapshot"):
            emu.later(rec, wait, {"lifecycle_state": "failed"})
        else:
            emu.later(rec, wait / 2, {"progress": 50})
            emu.later(rec, wait, lambda r: r.update(lifecycle_state="stable", progress=100, captured_at=r["created_at"]))
        return 201, rec, {"ETag": emu.etag(rec)}

    def delete_snapshot(region, params, query, body, headers):
        rec = emu.find("snapshot", region, params["id"])
        emu.check_if_match(rec, headers)
        if rec["lifecycle_state"] in ("deleting",):
            return 204, None
        if any(v.get("source_snapshot", {}).get("id") == rec["id"] and v["status"] == "pending" for v in emu.records("volume", region)):
            raise ApiError(409, "snapshot_in_use", "Snapshot %s is being restored to a volume" % rec["id"])
        rec["lifecycle_state"] = "deleting"
        emu.later(rec, emu.delay, lambda r: drop(emu, r))
        return 204, None

    def get_volume_profile(region, params, query, body, headers):
        if params["name"] not in VOLUME_PROFILES:
            raise ApiError(404, "volume_profile_not_found", "Volume profile %s not found" % params["name"])
        return 200, _volume_profile(emu, region, params["name"])

    def list_volume_profiles(region, params, query, body, headers):
        items = [_volume_profile(emu, region, name) for name in VOLUME_PROFILES]
        return 200, emu.page(region, "profiles", items, query, path="volume/profiles", key="name")

    def volume_bytes(params, query, raw):
        rec = emu.store.get("volume", {}).get(params["id"])
        if rec is None:
            raise ApiError(404, "volume_not_found", "Volume %s not found" % params["id"])
        write_volume(emu, rec["id"], raw)
        return 204, None

    def seed_volume_control(params, query, raw):
        import json
        spec = json.loads(raw or b"{}")
        return 201, new_volume(emu, spec.get("region") or emu.regions[0], spec.get("name"), spec.get("capacity", 10),
                               spec.get("zone"), spec.get("profile", "general-purpose"), spec.get("user_tags"), wait=False,
                               encryption_key=spec.get("encryption_key"))

    emu.route("GET", "/volumes", list_volumes)
    emu.route("POST", "/volumes", create_volume)
    emu.route("GET", "/volumes/{id}", emu.getter("volume"))
    emu.route("PATCH", "/volumes/{id}", emu.updater("volume", ("name", "user_tags", "capacity", "iops"), grow_only))
    emu.route("DELETE", "/volumes/{id}", delete_volume)
    emu.route("GET", "/volume/profiles", list_volume_profiles)
    emu.route("GET", "/volume/profiles/{name}", get_volume_profile)
    emu.route("GET", "/snapshots", list_snapshots)
    emu.route("POST", "/snapshots", create_snapshot)
    emu.route("GET", "/snapshots/{id}", emu.getter("snapshot"))
    emu.route("PATCH", "/snapshots/{id}", emu.updater("snapshot", ("name", "user_tags")))
    emu.route("DELETE", "/snapshots/{id}", delete_snapshot)
    emu.control("POST", "/volumes", seed_volume_control)
    emu.control("PUT", "/volumes/{id}/bytes", volume_bytes)


def drop(emu, rec):
    """A volume or snapshot is gone: its record, its file, and its entry in the source snapshot's ``copies``."""
    emu.forget(rec)
    path = _file(emu, rec["id"])
    if path and os.path.exists(path):
        os.unlink(path)
    for source in emu.store.get("snapshot", {}).values():
        source["copies"] = [c for c in source.get("copies", []) if c["id"] != rec["id"]]


def _volume_profile(emu, region, name):
    per_gb = VOLUME_PROFILES[name]
    iops = {"type": "fixed", "value": 3000} if per_gb is None else {"type": "dependent"}
    return {"name": name, "href": emu.service_url(region) + "/volume/profiles/" + name, "family": "tiered" if per_gb else "custom",
            "adjustable_capacity_states": {"type": "enum", "values": ["attached", "unattached"]},
            "adjustable_iops_states": {"type": "enum", "values": ["attached", "unattached"]},
            "bandwidth": {"type": "dependent"}, "boot_capacity": {"type": "range", "min": 10, "max": 250, "step": 1, "default": 100},
            "capacity": {"type": "range", "min": 10, "max": 16000, "step": 1, "default": 100}, "iops": iops,
            "storage_generation": {"type": "fixed", "value": 1}}
