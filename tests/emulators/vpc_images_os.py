# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Operating systems of the VPC emulator: a catalog, and the set each region offers (a test can take one away).

Records follow the reference's ``OperatingSystem``: allow_user_image_creation, architecture, dedicated_host_only,
display_name, family, href, name, user_data_format, vendor, version. ``GET /operating_systems`` is paged by name.
"""

from __future__ import annotations

import json

from tests.emulators.vpc_server import ApiError

# name: (display name, family, vendor, version, architecture, user_data_format, allow_user_image_creation, dedicated_host_only)
CATALOG = {
    "centos-stream-9-amd64": ("CentOS Stream 9 (amd64)", "CentOS Stream", "CentOS", "9", "amd64", "cloud_init", True, False),
    "debian-12-amd64": ("Debian GNU/Linux 12 bookworm Minimal Install (amd64)", "Debian GNU/Linux", "Debian", "12.x bookworm/Minimal Install",
                        "amd64", "cloud_init", True, False),
    "red-9-amd64": ("Red Hat Enterprise Linux 9.x - Minimal Install (amd64)", "Red Hat Enterprise Linux", "Red Hat", "9.x - Minimal Install",
                    "amd64", "cloud_init", True, False),
    "rocky-linux-9-amd64": ("Rocky Linux 9.x - Minimal Install (amd64)", "Rocky Linux", "Rocky Enterprise Software Foundation",
                            "9.x - Minimal Install", "amd64", "cloud_init", True, False),
    "ubuntu-22-04-amd64": ("Ubuntu Linux 22.04 LTS Jammy Jellyfish Minimal Install (amd64)", "Ubuntu Linux", "Canonical",
                           "22.04 LTS Jammy Jellyfish Minimal Install", "amd64", "cloud_init", True, False),
    "ubuntu-24-04-amd64": ("Ubuntu Linux 24.04 LTS Noble Numbat Minimal Install (amd64)", "Ubuntu Linux", "Canonical",
                           "24.04 LTS Noble Numbat Minimal Install", "amd64", "cloud_init", True, False),
    "ubuntu-24-04-s390x": ("Ubuntu Linux 24.04 LTS Noble Numbat (s390x)", "Ubuntu Linux", "Canonical", "24.04 LTS Noble Numbat", "s390x",
                           "cloud_init", True, False),
    "windows-2022-amd64": ("Windows Server 2022 Standard Edition (amd64)", "Windows Server", "Microsoft", "2022 Standard Edition", "amd64",
                           "cloud_init", True, False),
    "esxi-8-byol-amd64": ("VMware ESXi 8.x BYOL (amd64)", "VMware ESXi", "VMware", "8.x BYOL", "amd64", "esxi_kickstart", False, False),
    "ibm-zos-2-5-s390x-dev-test-byol": ("IBM z/OS 2.5 Dev/Test BYOL (s390x)", "IBM z/OS", "IBM", "2.5 Dev/Test BYOL", "s390x", "cloud_init",
                                        False, False),
}


def record(emu, region, name):
    display, family, vendor, version, arch, user_data, allow, dedicated = CATALOG[name]
    return {"name": name, "href": "%s/operating_systems/%s" % (emu.service_url(region), name), "display_name": display,
            "family": family, "vendor": vendor, "version": version, "architecture": arch, "user_data_format": user_data,
            "allow_user_image_creation": allow, "dedicated_host_only": dedicated}


def offered(emu, region):
    """Names of the operating systems ``region`` offers (every one of the catalog unless a test changed it)."""
    return emu.offered_os.setdefault(region, sorted(CATALOG))


def find(emu, region, ident):
    """An offered operating system by ``{"name"}`` or ``{"href"}`` (an OperatingSystemIdentity); 404 otherwise."""
    name = ident.get("name") or (ident.get("href") or "").rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ApiError(400, "validation_required_field", "operating_system.name or operating_system.href is required",
                       target={"name": "operating_system", "type": "field"})
    if name not in offered(emu, region):
        raise ApiError(404, "operating_system_not_found", "Operating system %s not found in region %s" % (name, region),
                       target={"name": "operating_system.name", "type": "field"})
    return record(emu, region, name)


def register(emu):
    emu.offered_os = {}

    def list_os(region, params, query, body, headers):
        items = [record(emu, region, name) for name in offered(emu, region)]
        return 200, emu.page(region, "operating_systems", items, query, key="name")

    def get_os(region, params, query, body, headers):
        if params["name"] not in offered(emu, region):
            raise ApiError(404, "operating_system_not_found", "Operating system %s not found in region %s" % (params["name"], region))
        return 200, record(emu, region, params["name"])

    def set_offered(params, query, raw):
        """PUT /_emulator/operating_systems/{region} ``{"names": [...]}``: the operating systems that region offers."""
        try:
            names = json.loads(raw or b"{}")["names"]
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, "bad_request", 'the body is {"names": [operating system names]}') from None
        unknown = sorted(set(names) - set(CATALOG))
        if unknown or params["region"] not in emu.regions:
            raise ApiError(400, "bad_request", "unknown operating systems %s or region %s; known: %s"
                           % (", ".join(unknown), params["region"], ", ".join(sorted(CATALOG))))
        emu.offered_os[params["region"]] = sorted(set(names))
        return 200, {"region": params["region"], "names": emu.offered_os[params["region"]]}

    emu.route("GET", "/operating_systems", list_os)
    emu.route("GET", "/operating_systems/{name}", get_os)
    emu.control("PUT", "/operating_systems/{region}", set_offered)
