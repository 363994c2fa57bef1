# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Instance profiles of the VPC emulator: a few balanced/compute/memory profiles as the API describes them."""

from __future__ import annotations

# name -> (vCPUs, memory GiB, family)
INSTANCE_PROFILES = {"bx2-2x8": (2, 8, "balanced"), "bx2-4x16": (4, 16, "balanced"), "cx2-2x4": (2, 4, "compute"),
                     "mx2-2x16": (2, 16, "memory")}


def _fixed(value):
    return {"type": "fixed", "value": value}


def instance_profile(emu, region, name):
    cpus, memory, family = INSTANCE_PROFILES[name]
    return {
        "name": name, "href": emu.service_url(region) + "/instance/profiles/" + name, "family": family,
        "resource_type": "instance_profile", "status": "current", "availability_class": _fixed("standard"),
        "bandwidth": _fixed(cpus * 2000), "cluster_network_attachment_count": {"type": "dependent"},
        "confidential_compute_modes": {"type": "enum", "values": ["disabled"], "default": "disabled"}, "disks": [],
        "memory": _fixed(memory), "network_attachment_count": {"type": "range", "min": 1, "max": 5},
        "network_bandwidth_mode": _fixed("pooled"), "network_interface_count": {"type": "range", "min": 1, "max": 5},
        "os_architecture": {"type": "enum", "values": ["amd64"], "default": "amd64"}, "port_speed": _fixed(16000),
        "reservation_terms": {"type": "enum", "values": ["one_year", "three_year"]},
        "secure_boot_modes": {"type": "enum", "values": [False, True], "default": False},
        "supported_cluster_network_profiles": [], "threads_per_core": {"type": "enum", "values": [1, 2], "default": 2},
        "total_volume_bandwidth": _fixed(cpus * 500), "vcpu_architecture": _fixed("amd64"),
        "vcpu_burst_limit": _fixed(100), "vcpu_count": _fixed(cpus), "vcpu_manufacturer": _fixed("intel"),
        "vcpu_percentage": {"type": "enum", "values": [100], "default": 100},
        "volume_bandwidth_qos_modes": {"type": "enum", "values": ["pooled", "weighted"], "default": "pooled"},
        "zones": [emu.zone_ref(region, "%s-%d" % (region, n)) for n in (1, 2, 3)],
    }
