# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""VPCs, subnets, regions and zones of the VPC emulator.

Each region has three zones ``<region>-1..3``; a VPC's default address prefix in zone n is
``10.240.<64*(n-1)>.0/18``. A subnet takes ``ipv4_cidr_block`` (inside its zone's prefix, not overlapping
another subnet of the VPC) or ``total_ipv4_address_count`` (the next free block). VPC and subnet:
``pending`` -> ``available``; deleting a VPC that still has subnets is 409; deleting a subnet in use by
an instance's network interface is 409.
"""

from __future__ import annotations

import ipaddress
import os

from tests.emulators.vpc_server import ApiError
from tests.emulators.vpc_storage import reference

ZONES_PER_REGION = 3
RESERVED_PER_SUBNET = 5  # IBM reserves 5 addresses of every subnet


def zones(region):
    return ["%s-%d" % (region, n) for n in range(1, ZONES_PER_REGION + 1)]


def zone_prefix(zone):
    index = int(zone.rsplit("-", 1)[1]) - 1
    return ipaddress.ip_network("10.240.%d.0/18" % (64 * index))


def vpc_reference(emu, vpc_id):
    rec = emu.store["vpc"][vpc_id]
    return reference(rec, "vpc")


def find_subnet(emu, region, sid):
    return emu.find("subnet", region, sid)


def _ref(emu, region, kind, path, name):
    rid = "r006-" + os.urandom(16).hex()
    out = {"id": rid, "crn": emu.crn(region, kind, rid), "href": "%s/%s/%s" % (emu.service_url(region), path, rid), "name": name}
    if kind == "routing_table":
        out["resource_type"] = "routing_table"
    return out


def new_vpc(emu, region, name=None, wait=True):
    name = name or "vpc-" + os.urandom(4).hex()
    if any(r["name"] == name for r in emu.records("vpc", region)):
        raise ApiError(409, "validation_unique_failed", "The VPC name %s is already in use" % name)
    rec = emu.new_record(
        "vpc", region, "vpcs", name=name, classic_access=False, resource_type="vpc", status="pending" if wait else "available",
        health_reasons=[], health_state="inapplicable" if wait else "ok",
        cse_source_ips=[{"ip": {"address": "10.16.%d.4" % n}, "zone": emu.zone_ref(region, z)} for n, z in enumerate(zones(region))],
        default_network_acl=_ref(emu, region, "network_acl", "network_acls", name + "-acl"),
        default_routing_table=_ref(emu, region, "routing_table", "vpcs/routing_tables", name + "-routes"),
        default_security_group=_ref(emu, region, "security_group", "security_groups", name + "-sg"),
        dns={"enable_hub": False, "resolution_binding_count": 0,
             "resolver": {"type": "system", "configuration": "default",
                          "servers": [{"address": "161.26.0.10"}, {"address": "161.26.0.11"}]}},
        public_address_ranges=[])
    if wait:
        emu.later(rec, emu.delay, {"status": "available", "health_state": "ok"})
    return rec


def _taken(emu, vpc_id):
    return [ipaddress.ip_network(s["ipv4_cidr_block"]) for s in emu.store.get("subnet", {}).values() if s["vpc"]["id"] == vpc_id]


def _cidr(emu, vpc, zone, body):
    prefix, taken = zone_prefix(zone), _taken(emu, vpc["id"])
    if body.get("ipv4_cidr_block"):
        try:
            net = ipaddress.ip_network(body["ipv4_cidr_block"])
        except ValueError:
            raise ApiError(400, "validation_invalid_ipv4_cidr", "ipv4_cidr_block %s is not a CIDR block" % body["ipv4_cidr_block"],
                           target={"name": "ipv4_cidr_block", "type": "field"}) from None
        if not net.subnet_of(prefix):
            raise ApiError(400, "not_in_address_prefix", "%s is not inside the address prefix %s of zone %s" % (net, prefix, zone))
        if any(net.overlaps(other) for other in taken):
            raise ApiError(409, "network_conflict", "%s overlaps another subnet of VPC %s" % (net, vpc["id"]))
        return net
    count = body.get("total_ipv4_address_count")
    if not isinstance(count, int) or count < 8 or count & (count - 1):
        raise ApiError(400, "bad_field", "total_ipv4_address_count must be a power of 2, at least 8",
                       target={"name": "total_ipv4_address_count", "type": "field"})
    for net in prefix.subnets(new_prefix=32 - count.bit_length() + 1):
        if not any(net.overlaps(other) for other in taken):
            return net
    raise ApiError(409, "insufficient_space_for_subnet", "No free block of %d addresses in zone %s" % (count, zone))


def _zone_of_cidr(region, cidr):
    """The zone whose address prefix holds ``cidr`` (the reference takes the zone from the prefix when none is given)."""
    try:
        net = ipaddress.ip_network(cidr) if cidr else None
    except ValueError:
        return None
    return next((zone for zone in zones(region) if net is not None and net.subnet_of(zone_prefix(zone))), None)


def new_subnet(emu, region, body, wait=True):
    vpc = emu.find("vpc", region, (body.get("vpc") or {}).get("id", ""))
    zone = (body.get("zone") or {}).get("name") or _zone_of_cidr(region, body.get("ipv4_cidr_block"))
    if not zone:
        raise ApiError(400, "validation_required_field", "zone is required with total_ipv4_address_count",
                       target={"name": "zone", "type": "field"})
    if zone not in zones(region):
        raise ApiError(404, "zone_not_found", "Zone %s not found in region %s" % (zone, region))
    if not body.get("ipv4_cidr_block") and not body.get("total_ipv4_address_count"):
        raise ApiError(400, "validation_required_field", "ipv4_cidr_block or total_ipv4_address_count is required",
                       target={"name": "ipv4_cidr_block", "type": "field"})
    net = _cidr(emu, vpc, zone, body)
    name = body.get("name") or "subnet-" + os.urandom(4).hex()
    if any(s["name"] == name and s["vpc"]["id"] == vpc["id"] for s in emu.records("subnet", region)):
        raise ApiError(409, "validation_unique_failed", "The subnet name %s is already in use in VPC %s" % (name, vpc["id"]))
    hosts = net.hosts()
    for _skip in range(3):  # network, gateway and two IBM addresses come first
        next(hosts)
    rec = emu.new_record(
        "subnet", region, "subnets", name=name, ip_version="ipv4", ipv4_cidr_block=str(net),
        total_ipv4_address_count=net.num_addresses, available_ipv4_address_count=net.num_addresses - RESERVED_PER_SUBNET,
        network_acl=dict(vpc["default_network_acl"]), routing_table=dict(vpc["default_routing_table"]), resource_type="subnet",
        status="pending" if wait else "available", vpc=reference(vpc, "vpc"), zone=emu.zone_ref(region, zone))

    def next_ip():
        rec["available_ipv4_address_count"] -= 1
        return str(next(hosts))
    rec["_next_ip"] = next_ip
    if wait:
        emu.later(rec, emu.delay, {"status": "available"})
    return rec


def default_subnet(emu, region, zone, vpc_id=None):
    """The first subnet of a VPC in a zone, made (with the VPC) when there is none: for seeding instances."""
    vpc = emu.find("vpc", region, vpc_id) if vpc_id else next(iter(emu.records("vpc", region)), None) or new_vpc(emu, region, wait=False)
    for subnet in emu.records("subnet", region):
        if subnet["vpc"]["id"] == vpc["id"] and subnet["zone"]["name"] == zone:
            return subnet
    return new_subnet(emu, region, {"vpc": {"id": vpc["id"]}, "zone": {"name": zone}, "total_ipv4_address_count": 256}, wait=False)


def _in_use(emu, subnet):
    return [i for i in emu.store.get("instance", {}).values() if i["primary_network_interface"]["subnet"]["id"] == subnet["id"]]


def register(emu):
    def region_record(name):
        return {"name": name, "href": "%s/regions/%s" % (emu.service_url(name), name), "status": "available",
                "endpoint": emu.url + "/" + name}

    def list_regions(region, params, query, body, headers):
        return 200, {"regions": [region_record(name) for name in emu.regions]}

    def get_region(region, params, query, body, headers):
        if params["name"] not in emu.regions:
            raise ApiError(404, "region_not_found", "Region %s not found" % params["name"])
        return 200, region_record(params["name"])

    def zone_record(name, zone):
        return {"name": zone, "href": "%s/regions/%s/zones/%s" % (emu.service_url(name), name, zone), "status": "available",
                "region": {"name": name, "href": "%s/regions/%s" % (emu.service_url(name), name)},
                "universal_name": "%s-%s" % (name[:2], zone.rsplit("-", 1)[1]), "data_center": "dal1%s" % zone.rsplit("-", 1)[1]}

    def list_zones(region, params, query, body, headers):
        get_region(region, params, query, body, headers)
        return 200, {"zones": [zone_record(params["name"], zone) for zone in zones(params["name"])]}

    def get_zone(region, params, query, body, headers):
        get_region(region, params, query, body, headers)
        if params["zone"] not in zones(params["name"]):
            raise ApiError(404, "zone_not_found", "Zone %s not found in region %s" % (params["zone"], params["name"]))
        return 200, zone_record(params["name"], params["zone"])

    def list_vpcs(region, params, query, body, headers):
        items = emu.records("vpc", region)
        if "resource_group.id" in query:
            items = [i for i in items if i["resource_group"]["id"] == query["resource_group.id"]]
        if "classic_access" in query:
            items = [i for i in items if str(i["classic_access"]).lower() == query["classic_access"].lower()]
        return 200, emu.page(region, "vpcs", items, query)

    def create_vpc(region, params, query, body, headers):
        return 201, new_vpc(emu, region, (body or {}).get("name"))

    def delete_vpc(region, params, query, body, headers):
        rec = emu.find("vpc", region, params["id"])
        if any(s["vpc"]["id"] == rec["id"] for s in emu.records("subnet", region)):
            raise ApiError(409, "vpc_not_empty", "VPC %s still has subnets; delete them first" % rec["id"])
        rec["status"] = "deleting"
        emu.later(rec, emu.delay, emu.forget)
        return 204, None

    def list_subnets(region, params, query, body, headers):
        items = emu.records("subnet", region)
        for key, path in (("zone.name", ("zone", "name")), ("vpc.id", ("vpc", "id")), ("vpc.crn", ("vpc", "crn")),
                          ("vpc.name", ("vpc", "name")), ("resource_group.id", ("resource_group", "id")),
                          ("routing_table.id", ("routing_table", "id")), ("routing_table.name", ("routing_table", "name"))):
            if key in query:
                items = [i for i in items if i[path[0]][path[1]] == query[key]]
        return 200, emu.page(region, "subnets", items, query)

    def create_subnet(region, params, query, body, headers):
        return 201, new_subnet(emu, region, body or {})

    def delete_subnet(region, params, query, body, headers):
        rec = emu.find("subnet", region, params["id"])
        if _in_use(emu, rec):
            raise ApiError(409, "subnet_not_empty", "Subnet %s has network interfaces of instances; delete them first" % rec["id"])
        rec["status"] = "deleting"
        emu.later(rec, emu.delay, emu.forget)
        return 204, None

    emu.route("GET", "/regions", list_regions)
    emu.route("GET", "/regions/{name}", get_region)
    emu.route("GET", "/regions/{name}/zones", list_zones)
    emu.route("GET", "/regions/{name}/zones/{zone}", get_zone)
    emu.route("GET", "/vpcs", list_vpcs)
    emu.route("POST", "/vpcs", create_vpc)
    emu.route("GET", "/vpcs/{id}", emu.getter("vpc"))
    emu.route("PATCH", "/vpcs/{id}", emu.updater("vpc", ("name",)))
    emu.route("DELETE", "/vpcs/{id}", delete_vpc)
    emu.route("GET", "/subnets", list_subnets)
    emu.route("POST", "/subnets", create_subnet)
    emu.route("GET", "/subnets/{id}", emu.getter("subnet"))
    emu.route("PATCH", "/subnets/{id}", emu.updater("subnet", ("name",)))
    emu.route("DELETE", "/subnets/{id}", delete_subnet)
