# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Recovery in the DR region (the seed's ``tf_recover``): a VPC, a subnet per zone and one instance per server from
its ``<server>-latest`` image (``source=image``) or from the newest copy of its boot volume's snapshot that
replication_mode snapshot_copy made there (``source=snapshot``), mirroring the source's profile and zone (through a
zone map).

VPCs, subnets and instances have no user_tags in the VPC API; what the collection made is told by names and by the
user_tags of each instance's boot volume (``created-by``, ``source-server``, ``recover-vpc``). ``absent`` deletes only
instances whose boot volume carries those tags, then the subnets it names ``<vpc>-<zone>`` once empty, then the VPC once
it has no subnet left; anything else in the VPC keeps it (and is reported).
"""

from __future__ import annotations

from ansible_collections.vmimage.replication.plugins.module_utils import _naming
from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc_client as vpcc
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError


def target_zone(zone, zone_map, region):
    """The DR zone of a source zone: zone_map's answer, else the same zone number in ``region``."""
    if zone in (zone_map or {}):
        return zone_map[zone]
    number = str(zone or "").rsplit("-", 1)[-1]
    if not number.isdigit():
        raise ReplicationError("Failed to map zone %r to region %s: give it in zone_map" % (zone, region))
    return "%s-%s" % (region, number)


def subnet_name(vpc_name, zone):
    return ("%s-%s" % (vpc_name, zone))[:63]


class Recover(vpcc.Base):
    def __init__(self, params):
        super().__init__(params)
        if not self.vpc.get("region"):
            raise ReplicationError("Failed to recover: set ibm_vpc.region to the DR region (for example eu-de)")

    # --- finding ------------------------------------------------------------------------------------------------------------
    def find_vpc(self, name):
        found = [v for v in self.pages("find VPC %s" % name, "list_vpcs", "vpcs") if v.get("name") == name]
        return found[0] if found else None

    def subnets(self, vpc_id):
        return self.pages("list subnets of VPC %s" % vpc_id, "list_subnets", "subnets", vpc_id=vpc_id) if vpc_id else []

    def instances(self, vpc_id):
        return self.pages("list instances of VPC %s" % vpc_id, "list_instances", "instances", vpc_id=vpc_id) if vpc_id else []

    def boot_tags(self, inst):
        vol_id = (((inst.get("boot_volume_attachment") or {}).get("volume")) or {}).get("id")
        vol = self.get_or_none("get_volume", vol_id) if vol_id else None
        return vpcc.parse_tags((vol or {}).get("user_tags"))

    def is_ours(self, inst, vpc_name):
        tags = self.boot_tags(inst)
        return tags.get("created-by") == _naming.CREATED_BY and tags.get("recover-vpc") == vpc_name

    def image(self, server):
        name = _naming.latest_name(server)
        found = [i for i in self.pages("find image %s" % name, "list_images", "images", name=name) if i.get("status") == "available"]
        if not found:
            raise ReplicationError("Failed to recover server %s: no available image %s in region %s; replicate the server first"
                                   % (server, name, self.vpc["region"]), server=server)
        return found[0]

    def snapshot(self, server):
        """The newest stable snapshot the collection made of ``server`` in the region (its copies carry the source's tags)."""
        found = [s for s in self.pages("find snapshots of %s" % server, "list_snapshots", "snapshots", tag="source-server:%s" % server)
                 if s.get("lifecycle_state") == "stable" and vpcc.ours(s)]
        if not found:
            raise ReplicationError("Failed to recover server %s: no stable snapshot copy of it in region %s; replicate it with "
                                   "replication_mode snapshot_copy first" % (server, self.vpc["region"]), server=server)
        return max(found, key=lambda s: (s.get("captured_at") or s.get("created_at") or "", s["id"]))

    def boot_source(self, server):
        """``(kind, record)``: what the server's instance boots from, per the ``source`` option."""
        if self.params.get("source") == "snapshot":
            return "snapshot", self.snapshot(server)
        return "image", self.image(server)

    # --- present ------------------------------------------------------------------------------------------------------------
    def present(self, vpc_name, servers, zone_map, address_count, check_mode=False):
        region = self.vpc["region"]
        plan = [dict(s, target_zone=target_zone(s["zone"], zone_map, region)) for s in servers]
        images = {s["name"]: self.boot_source(s["name"]) for s in plan}  # every image (snapshot) checked before anything is made
        made = {"vpc": None, "subnets": [], "instances": []}
        vpc = self.find_vpc(vpc_name)
        if vpc is None:
            made["vpc"] = vpc_name
            if check_mode:
                return dict(made, subnets=sorted({subnet_name(vpc_name, s["target_zone"]) for s in plan}),
                            instances=[s["name"] for s in plan]), True
            vpc = self.call("create VPC %s" % vpc_name, "VPC %s" % vpc_name, "create_vpc", name=vpc_name, address_prefix_management="auto")
            self._wait_available("get_vpc", vpc["id"], "VPC %s" % vpc_name, "create VPC %s" % vpc_name)
        subnets = {s["name"]: s for s in self.subnets(vpc["id"])}
        for zone in sorted({s["target_zone"] for s in plan}):
            name = subnet_name(vpc_name, zone)
            if name in subnets:
                continue
            made["subnets"].append(name)
            if not check_mode:
                sub = self.call("create subnet %s" % name, "subnet %s" % name, "create_subnet", {
                    "name": name, "vpc": {"id": vpc["id"]}, "zone": {"name": zone}, "total_ipv4_address_count": address_count})
                subnets[name] = self._wait_available("get_subnet", sub["id"], "subnet %s" % name, "create subnet %s" % name)
        existing = {i["name"]: i for i in self.instances(vpc["id"])}
        for server in plan:
            if server["name"] in existing:
                if not self.is_ours(existing[server["name"]], vpc_name):
                    raise ReplicationError("Failed to recover server %s: VPC %s has an instance of that name that %s did not make; "
                                           "rename or remove it" % (server["name"], vpc_name, _naming.CREATED_BY), server=server["name"])
                continue
            made["instances"].append(server["name"])
            if not check_mode:
                self._instance(server, images[server["name"]], vpc, subnets[subnet_name(vpc_name, server["target_zone"])], vpc_name)
        return made, bool(made["vpc"] or made["subnets"] or made["instances"])

    def _instance(self, server, source, vpc, subnet, vpc_name):
        action = "recover server %s" % server["name"]
        kind, record = source
        volume = {"name": ("%s-boot" % server["name"])[-63:], "profile": {"name": self.vpc["volume_profile"]},
                  "user_tags": vpcc.tags(source_server=server["name"], recover_vpc=vpc_name, **{"source_%s" % kind: record["id"]})}
        proto = {"name": server["name"], "profile": {"name": server["profile"]}, "zone": {"name": server["target_zone"]},
                 "vpc": {"id": vpc["id"]}, "primary_network_interface": {"name": "eth0", "subnet": {"id": subnet["id"]}},
                 "boot_volume_attachment": {"delete_volume_on_instance_delete": True, "volume": volume}}
        if kind == "image":
            proto["image"] = {"id": record["id"]}
        else:  # VPC's instance by source snapshot: the boot volume is made from the snapshot
            volume["source_snapshot"] = {"id": record["id"]}
        inst = self.call(action, "instance %s" % server["name"], "create_instance", proto)
        if self.params.get("wait") is False:
            return

        def probe():
            found = self.call(action, "instance %s" % server["name"], "get_instance", inst["id"])
            return found.get("status") == "running", {"status": found.get("status"), "reasons": found.get("status_reasons")}
        vpcc.wait(probe, self.params, "instance %s" % server["name"], ("failed",), action)

    def _wait_available(self, method, ident, what, action):
        def probe():
            found = self.call(action, what, method, ident)
            return found.get("status") == "available", {"status": found.get("status"), "record": found}
        return vpcc.wait(probe, self.params, what, ("failed", "deleting"), action)["record"]

    # --- absent -------------------------------------------------------------------------------------------------------------
    def absent(self, vpc_name, check_mode=False):
        removed = {"vpc": None, "subnets": [], "instances": [], "kept": []}
        vpc = self.find_vpc(vpc_name)
        if vpc is None:
            return removed, False
        instances = self.instances(vpc["id"])
        ours = [i for i in instances if self.is_ours(i, vpc_name)]
        removed["kept"] = ["instance %s" % i["name"] for i in instances if i not in ours]
        busy_subnets = {((i.get("primary_network_interface") or {}).get("subnet") or {}).get("id") for i in instances if i not in ours}
        for inst in ours:
            removed["instances"].append(inst["name"])
            if not check_mode:
                self.call("remove instance %s" % inst["name"], "instance %s" % inst["name"], "delete_instance", inst["id"])
        if not check_mode:
            for inst in ours:
                self.wait_gone("get_instance", inst["id"], "instance %s" % inst["name"], "remove instance %s" % inst["name"])
        subnets = self.subnets(vpc["id"])
        for sub in subnets:
            mine = sub["name"] == subnet_name(vpc_name, (sub.get("zone") or {}).get("name"))
            if not mine or sub["id"] in busy_subnets:
                removed["kept"].append("subnet %s" % sub["name"])
                continue
            removed["subnets"].append(sub["name"])
            if not check_mode:
                self.call("remove subnet %s" % sub["name"], "subnet %s" % sub["name"], "delete_subnet", sub["id"])
                self.wait_gone("get_subnet", sub["id"], "subnet %s" % sub["name"], "remove subnet %s" % sub["name"])
        if not removed["kept"]:
            removed["vpc"] = vpc_name
            if not check_mode:
                self.call("remove VPC %s" % vpc_name, "VPC %s" % vpc_name, "delete_vpc", vpc["id"])
                self.wait_gone("get_vpc", vpc["id"], "VPC %s" % vpc_name, "remove VPC %s" % vpc_name)
        return removed, bool(removed["vpc"] or removed["subnets"] or removed["instances"])
