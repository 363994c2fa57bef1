# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The ``ibm_vpc`` side of ``_snapshot_copy``: VPC block storage snapshots copied across regions, listed and restored.

A copy is ``POST /snapshots`` in the destination region with ``source_snapshot: {crn}`` (VPC's cross-region copy),
optionally ``encryption_key: {crn}`` (a Key Protect / Hyper Protect key of the destination). The collection's state
rides in ``user_tags``. IBM tags allow letters, digits, space, ``_ - . :`` only, so a state key
``vmimage.replication/<name>`` is written ``vmimage.replication.<name>:<value>``, the start time as
``YYYYMMDD-HHMMSS`` (tags may come back lower-cased) and the selector as a digest (it holds ``=`` and ``,``).
"""

from __future__ import annotations

import hashlib
import uuid

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _snapshot_copy
from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc_client as vpcc
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._ibm_vpc_client import ApiException, Base

TAG_MAX = 128
CREATED_BY_TAG = "%s:%s" % (_snapshot_copy.CREATED_BY_KEY, _naming.CREATED_BY)
RESTORED_FROM = "vmimage.replication.restored-from"
# lifecycle_state of a VPC snapshot -> the states _snapshot_copy knows (plan: "error" is a broken copy; run_copies: completed/failed)
STATES = {"stable": "completed", "failed": "error", "pending": "pending", "updating": "pending", "deleting": "deleting", "suspended": "error"}


def selector_digest(selector):
    return "sel-" + hashlib.sha256(selector.encode()).hexdigest()[:16]


def to_user_tags(tags, selector):
    """``_snapshot_copy.state_tags`` as VPC user tags (see the module docstring)."""
    out = []
    for key, value in tags.items():
        if key == _snapshot_copy.SELECTOR:
            value = selector_digest(selector)
        elif key == _snapshot_copy.START_TIME:
            value = _naming.stamp(value)
        tag = "%s:%s" % (key.replace("/", "."), value)
        if len(tag) <= TAG_MAX:
            out.append(tag)
    return sorted(out)


def from_user_tags(user_tags, selector):
    """The tags dict ``_snapshot_copy.parse_copy`` reads, from VPC user tags."""
    tags = {}
    for key, value in vpcc.parse_tags(user_tags).items():
        if key.startswith(_snapshot_copy.PREFIX.replace("/", ".")):
            key = _snapshot_copy.PREFIX + key[len(_snapshot_copy.PREFIX):]
        tags[key] = value
    if _snapshot_copy.START_TIME in tags:
        try:
            tags[_snapshot_copy.START_TIME] = _naming.format_time(tags[_snapshot_copy.START_TIME].upper())
        except ValueError:
            tags.pop(_snapshot_copy.START_TIME)  # not ours after all: parse_copy then ignores it
    if selector and tags.get(_snapshot_copy.SELECTOR) == selector_digest(selector):
        tags[_snapshot_copy.SELECTOR] = selector
    return tags


class CopyBackend(Base):
    """Snapshots of ``region`` matched by user tags or volume ids; copies in the destination regions."""

    def __init__(self, params, selector):
        super().__init__(params)
        self.region = params.get("region") or self.vpc.get("region")
        if not self.region:
            raise ReplicationError("Failed to plan copies: no source region; set region or ibm_vpc.region")
        self.vpc["region"] = self.region
        self.selector = selector
        self.key = params.get("encryption_key")

    def check_regions(self, regions):
        """Every region named exists (a typo is a clear error before anything is copied)."""
        for region in regions:
            try:
                self.service().get_region(region)
            except ApiException as exc:
                if exc.status_code == 404:
                    known = [r["name"] for r in self.call("list regions", "regions", "list_regions").get("regions") or []]
                    raise ReplicationError("Failed to plan copies: unknown region %s; choose one of %s" % (region, ", ".join(sorted(known)))) from None
                raise vpcc.fail(exc, "check region %s" % region, "region %s" % region, secret=self.vpc.get("api_key")) from None

    def check_keys(self):
        if self.key and (not self.key.startswith("crn:v1:") or len(self.key.split(":")) < 10 or self.key.split(":")[4] not in ("kms", "hs-crypto")):
            raise ReplicationError("Failed to plan copies: encryption_key %s is not the CRN of a Key Protect or Hyper Protect Crypto Services "
                                   "root key (crn:v1:...:kms:<region>:...:key:<id>)" % self.key)

    def sources(self):
        wanted = self.params.get("tags") or {}
        first = sorted(wanted.items())[:1]
        found = self.snapshots(**({"tag": "%s:%s" % first[0]} if first else {}))
        volumes = set(self.params.get("volume_ids") or [])
        out = []
        for snap in found:
            tags = vpcc.parse_tags(snap.get("user_tags"))
            if snap.get("lifecycle_state") != "stable" or any(tags.get(k) != str(v) for k, v in wanted.items()):
                continue
            volume = (snap.get("source_volume") or {}).get("id")
            if volumes and volume not in volumes:
                continue
            out.append(self._describe(snap, tags, volume))
        # VPC takes encryption_key on a copy if and only if the source is encrypted with a customer key (user_managed): so
        # the key goes with those copies only, and without one they cannot be made. Said before anything is copied.
        locked = [s["name"] for s in out if s["encryption"] == "user_managed"]
        if locked and not self.key:
            raise ReplicationError("Failed to plan copies: snapshot(s) %s are encrypted with a customer root key (user_managed), and VPC copies "
                                   "them only with a root key of the destination region; set encryption_key to its CRN" % ", ".join(locked))
        return out

    def _describe(self, snap, tags, volume_id):
        vol = self.get_or_none("get_volume", volume_id) if volume_id else None
        return dict(id=snap["id"], crn=snap["crn"], name=snap["name"], volume_id=volume_id, start_time=snap.get("captured_at") or snap["created_at"],
                    encryption=snap.get("encryption") or "provider_managed",
                    size=snap.get("minimum_capacity"), tags=tags, volume_type=((vol or {}).get("profile") or {}).get("name"),
                    iops=(vol or {}).get("iops"), zone=((vol or {}).get("zone") or {}).get("name"))

    def copies(self, region):
        records = (_snapshot_copy.parse_copy(s["id"], region, STATES.get(s.get("lifecycle_state"), s.get("lifecycle_state")),
                                             from_user_tags(s.get("user_tags"), self.selector))
                   for s in self.snapshots(region=region, tag=CREATED_BY_TAG) if s.get("lifecycle_state") != "deleting")
        return [r for r in records if r is not None]

    def copy_name(self, source):
        """``<source name>-<source region>`` (63 characters at most): readable, and distinct per origin region."""
        return ("%s-%s" % (source["name"], self.region))[-63:].lstrip("-")

    def start_copy(self, source, region, tags):
        action = "copy snapshot %s from %s to %s" % (source["name"], self.region, region)
        proto = {"source_snapshot": {"crn": source["crn"]}, "name": self.copy_name(source), "user_tags": to_user_tags(tags, self.selector)}
        if self.key and source.get("encryption") == "user_managed":  # VPC refuses a key for a provider_managed source
            proto["encryption_key"] = {"crn": self.key}
        try:
            try:
                return self.service(region).create_snapshot(proto).get_result()["id"]
            except ApiException as exc:
                if exc.status_code != 409 or "unique" not in vpcc.explain(exc):
                    raise
                # The name is taken (a broken copy about to be deleted, or someone's snapshot): copies are found by tags, not names.
                proto["name"] = "%s-%s" % (proto["name"][:56], uuid.uuid4().hex[:6])
                return self.service(region).create_snapshot(proto).get_result()["id"]
        except (ApiException, OSError) as exc:
            if getattr(exc, "status_code", None) == 429 or "429" in str(exc):
                raise _snapshot_copy.Throttled("Failed to start a copy of %s to %s: throttled (HTTP 429)" % (source["id"], region)) from None
            raise vpcc.fail(exc, action, "snapshot %s" % source["name"], secret=self.vpc.get("api_key")) from None

    def states(self, region, ids):
        out = {}
        for ident in ids:
            found = self.get_or_none("get_snapshot", ident, region)
            if found is not None:
                out[ident] = STATES.get(found.get("lifecycle_state"), found.get("lifecycle_state"))
        return out

    def delete(self, region, snapshot_id):
        try:
            self.service(region).delete_snapshot(snapshot_id)
        except (ApiException, OSError) as exc:
            if getattr(exc, "status_code", None) != 404:
                raise vpcc.fail(exc, "delete snapshot copy %s in %s" % (snapshot_id, region), "snapshot %s" % snapshot_id,
                                secret=self.vpc.get("api_key")) from None


def copy_records(params, region, origin_region=None):
    """The copies the collection made in ``region`` (parse_copy records, selector as its digest), oldest origin first."""
    backend = CopyBackend(dict(params, region=region), selector=None)
    backend.check_regions([region])
    records = [r for r in backend.copies(region) if origin_region is None or r["origin_region"] == origin_region]
    return sorted(records, key=lambda r: (r["start_time"], r["id"]))


def restore(params, check_mode):
    """A new volume in ``region`` / ``availability_zone`` from snapshot ``snapshot_id`` (id or name) of ``snapshot_region``.

    A snapshot of another region is copied back first (tag ``vmimage.replication.restored-from:<id>``). A volume restored
    earlier from the same snapshot in the same zone (same tag) is reused, so a re-run changes nothing. ``(changed, facts)``.
    """
    vpc = Base(params)
    region = params.get("region") or vpc.vpc.get("region")
    if not region:
        raise ReplicationError("Failed to restore snapshot %s: no region; set region or ibm_vpc.region" % params["snapshot_id"])
    where = params.get("snapshot_region") or region
    zone = params["availability_zone"]
    action = "restore snapshot %s into %s" % (params["snapshot_id"], zone)
    zones = [z["name"] for z in vpc.call(action, "region %s" % region, "list_region_zones", region, region=region).get("zones") or []]
    if zone not in zones:
        raise ReplicationError("Failed to %s: it is not a zone of %s; choose one of %s" % (action, region, ", ".join(sorted(zones))))
    snap = vpc.find_snapshot(params["snapshot_id"], action, region=where)
    marker = "%s:%s" % (RESTORED_FROM, snap["id"])
    facts = dict(snapshot_id=snap["id"], snapshot_region=where, region=region, copied_back=None, volume_id=None, created=False,
                 size_gib=snap.get("minimum_capacity"), pvc_name=None, pvc_namespace=None)
    local, changed = snap, False
    if where != region:
        back = [s for s in vpc.snapshots(region=region, tag=marker) if vpcc.ours(s) and s.get("lifecycle_state") not in ("failed", "deleting")]
        if back:
            local = back[0]
        elif check_mode:
            local, changed = None, True
        else:
            local = vpc.call(action, "snapshot %s" % snap["name"], "create_snapshot", {
                "source_snapshot": {"crn": snap["crn"]}, "name": ("%s-back-%s" % (snap["name"], uuid.uuid4().hex[:6]))[-63:].lstrip("-"),
                "user_tags": [CREATED_BY_TAG, marker]}, region=region)
            changed = True
        if local is not None:
            local = vpc.wait_snapshot(local, action, region=region) if not check_mode else local
            facts["copied_back"] = local["id"]
    found = [v for v in vpc.pages(action, "list_volumes", "volumes", region=region, tag=marker, zone_name=zone) if v.get("status") != "failed"]
    if found:
        facts.update(volume_id=found[0]["id"], size_gib=found[0].get("capacity"))
        return changed, facts
    if check_mode:
        return True, facts
    tags = from_user_tags(snap.get("user_tags"), None)
    profile = params.get("volume_type") or tags.get(_snapshot_copy.VOLUME_TYPE) or vpc.vpc["volume_profile"]
    proto = {"name": ("%s-restored-%s" % (snap["name"], uuid.uuid4().hex[:6]))[-63:].lstrip("-"), "profile": {"name": profile},
             "zone": {"name": zone}, "source_snapshot": {"id": local["id"]}, "user_tags": [CREATED_BY_TAG, marker]}
    if params.get("size"):
        proto["capacity"] = params["size"]
    if params.get("encryption_key"):
        proto["encryption_key"] = {"crn": params["encryption_key"]}
    made = vpc.call(action, "volume %s" % proto["name"], "create_volume", proto, region=region)

    def probe():
        vol = vpc.call(action, "volume %s" % proto["name"], "get_volume", made["id"], region=region)
        return vol.get("status") == "available", {"status": vol.get("status"), "reasons": vol.get("status_reasons"), "volume": vol}
    try:
        vol = vpcc.wait(probe, params, "volume %s" % proto["name"], ("failed", "unusable"), action)["volume"]
    except ReplicationError:
        vpc.call(action + " (and remove the volume it made, %s)" % made["id"], "volume %s" % made["id"], "delete_volume", made["id"], region=region)
        raise
    facts.update(volume_id=vol["id"], size_gib=vol.get("capacity"), created=True)
    return True, facts
