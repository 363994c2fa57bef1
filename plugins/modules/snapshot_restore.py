#!/usr/bin/python
# Copyright: vmimage.replication contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot_restore
short_description: Restore a replicated snapshot to a new volume and give its Kubernetes PersistentVolume and claim
version_added: 0.1.0
description:
  - Makes a new EBS volume in O(region) and O(availability_zone) from snapshot O(snapshot_id), copying the snapshot back
    from O(snapshot_region) first when it is in another region.
  - Returns a PersistentVolume for the EBS CSI driver (C(ebs.csi.aws.com)) over the new volume, reserved for a proposed
    PersistentVolumeClaim, also returned. Nothing is applied to a cluster; C(playbooks/restore.yml) writes or applies them.
  - Idempotent - a volume already restored from the same snapshot in the same zone (tag C(vmimage.replication/restored-from))
    is reused, as is a snapshot already copied back.
author:
  - vmimage.replication contributors (@vmimage)
extends_documentation_fragment:
  - vmimage.replication.aws
  - vmimage.replication.aws.attributes
  - vmimage.replication.ibm_vpc
options:
  provider:
    description:
      - The cloud. With V(ibm_vpc), O(snapshot_id) is a VPC snapshot's id or name (usually a copy listed by
        M(vmimage.replication.snapshot_copy_info)), O(region) (else O(ibm_vpc.region)) and O(availability_zone) say where the new
        volume goes (a VPC zone such as V(eu-de-2)), a snapshot of another region is copied back first, O(volume_type) is a VPC
        volume profile (default the original's, else O(ibm_vpc.volume_profile)) and O(encryption_key) a root key CRN.
      - With V(ibm_vpc), a VPC snapshot records no claim, so the Kubernetes objects are proposed only when O(pvc_name) and
        O(pvc_namespace) are given (else RV(persistent_volume) is null), a PersistentVolume for the IBM VPC Block CSI driver
        (C(vpc.block.csi.ibm.io), volume attributes C(volumeId), C(zone), C(region); node terms on the zone and on
        C(topology.kubernetes.io/region)). O(iops) and O(kms_key_id) are AWS only.
    type: str
    choices: [aws, ibm_vpc]
    default: aws
  encryption_key:
    description: O(provider=ibm_vpc) - encrypt the new volume (and a copy back) with this Key Protect / Hyper Protect root key CRN.
    type: str
  snapshot_id:
    description: The snapshot to restore (usually a copy listed by M(vmimage.replication.snapshot_copy_info)).
    type: str
    required: true
  snapshot_region:
    description: The region of O(snapshot_id), if not O(region).
    type: str
  availability_zone:
    description: The zone of the new volume (the zone of the nodes that will mount it).
    type: str
    required: true
  volume_type:
    description: The volume type; by default the type of the original volume (from the snapshot's tags), else AWS's default.
    type: str
  iops:
    description: Provisioned IOPS (io1, io2, gp3); by default those of the original volume.
    type: int
  size:
    description: Size of the new volume in GiB, at least the snapshot's; by default the snapshot's.
    type: int
  kms_key_id:
    description: Encrypt the copy back and the new volume with this KMS key of O(region).
    type: str
  pv_name:
    description: Name of the PersistentVolume; by default C(restored-<volume id>).
    type: str
  pvc_name:
    description:
      - Name of the proposed claim; by default the one the original volume was made for (its C(kubernetes.io/created-for/pvc/name) tag).
      - With O(provider=ibm_vpc), required (with O(pvc_namespace)) for the Kubernetes objects to be proposed.
    type: str
  pvc_namespace:
    description: Namespace of the proposed claim; by default the original's (tag C(kubernetes.io/created-for/pvc/namespace)).
    type: str
  storage_class:
    description: C(storageClassName) of both objects; empty by default, so that the claim binds to this volume only.
    type: str
    default: ""
  fs_type:
    description: File system of the volume, for the CSI driver.
    type: str
    default: ext4
  access_modes:
    description: Access modes of both objects.
    type: list
    elements: str
    default: [ReadWriteOnce]
  reclaim_policy:
    description: What Kubernetes does with the volume when the claim is deleted.
    type: str
    choices: [Retain, Delete]
    default: Retain
  labels:
    description: Labels of both objects (none by default).
    type: dict
  zone_label:
    description: The node label of the zone in the PersistentVolume's node affinity.
    type: str
    default: topology.kubernetes.io/zone
  wait:
    description: Wait until the volume is available.
    type: bool
    default: true
  wait_timeout:
    description: How long to wait for the copy back and the volume, in seconds.
    type: int
    default: 21600
  wait_sleep:
    description: Seconds between two looks.
    type: float
    default: 15.0
seealso:
  - module: vmimage.replication.snapshot_copy_info
  - module: vmimage.replication.snapshot_copy
"""

EXAMPLES = r"""
- name: Restore a copy from Frankfurt into eu-west-1a, for the claim it was made for
  vmimage.replication.snapshot_restore:
    region: eu-west-1
    snapshot_region: eu-central-1
    snapshot_id: snap-0fedcba9876543210
    availability_zone: eu-west-1a
  register: restored

- name: Write the proposed claim
  ansible.builtin.copy:
    content: "{{ restored.persistent_volume_claim | to_nice_yaml }}"
    dest: pvc.yaml
    mode: "0644"
"""

RETURN = r"""
changed:
  description: True when a snapshot was copied back or a volume made (in check mode, would be).
  returned: always
  type: bool
  sample: true
volume_id:
  description: The new (or reused) volume; null in check mode when it would be made.
  returned: always
  type: str
  sample: vol-0123456789abcdef0
created:
  description: True when this run made the volume.
  returned: always
  type: bool
  sample: true
copied_back:
  description: The snapshot copied into O(region), when O(snapshot_region) differs.
  returned: always
  type: str
  sample: snap-0aaaabbbbccccdddd
snapshot_id:
  description: The snapshot restored (O(snapshot_id)).
  returned: always
  type: str
  sample: snap-0fedcba9876543210
snapshot_region:
  description: Its region.
  returned: always
  type: str
  sample: eu-central-1
region:
  description: The region of the new volume (O(region), else the connection's).
  returned: always
  type: str
  sample: eu-central-1
pvc_name:
  description: The name of the proposed claim (O(pvc_name), else the snapshot's tag); null when neither says.
  returned: always
  type: str
  sample: data-db-0
pvc_namespace:
  description: The namespace of the proposed claim.
  returned: always
  type: str
  sample: shop
size_gib:
  description: Size of the volume in GiB.
  returned: always
  type: int
  sample: 8
persistent_volume:
  description:
    - The PersistentVolume over the volume (CSI C(ebs.csi.aws.com), or C(vpc.block.csi.ibm.io) with O(provider=ibm_vpc)), reserved for
      the claim; null in check mode before the volume exists, and with O(provider=ibm_vpc) when no claim is named.
  returned: always
  type: dict
  sample: {apiVersion: v1, kind: PersistentVolume, metadata: {name: restored-vol-0123456789abcdef0}}
persistent_volume_claim:
  description: The proposed PersistentVolumeClaim bound to RV(persistent_volume); null when RV(persistent_volume) is.
  returned: always
  type: dict
  sample: {apiVersion: v1, kind: PersistentVolumeClaim, metadata: {name: data-db-0, namespace: shop}}
"""

from ansible_collections.vmimage.replication.plugins.module_utils import _aws, _ibm_vpc_client, _ibm_vpc_copy, _k8s_manifests
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._module import ReplicationModule


def run(module):
    if module.params["provider"] == "ibm_vpc":
        return _run_ibm_vpc(module)
    with _aws.errors(module.action):
        return _run(module)


def _run(module):
    p = module.params
    changed, facts = _aws.restore(p, module.check_mode)
    facts.update(changed=changed, persistent_volume=None, persistent_volume_claim=None)
    if not facts["volume_id"]:
        return facts
    if not facts["pvc_name"] or not facts["pvc_namespace"]:
        raise ReplicationError("Failed to propose a claim for volume %s: the snapshot does not say which claim it was made for; set pvc_name "
                               "and pvc_namespace" % facts["volume_id"], **facts)
    return _propose(p, facts)


def _run_ibm_vpc(module):
    p = module.params
    for aws_only in ("iops", "kms_key_id"):
        if p[aws_only]:
            raise ReplicationError("Failed to restore snapshot %s: %s is for provider aws" % (p["snapshot_id"], aws_only))
    changed, facts = _ibm_vpc_copy.restore(p, module.check_mode)
    facts.update(changed=changed, persistent_volume=None, persistent_volume_claim=None, pvc_name=p["pvc_name"], pvc_namespace=p["pvc_namespace"])
    # A VPC snapshot records no claim: the objects are proposed when the claim is named.
    if not facts["volume_id"] or not p["pvc_name"] or not p["pvc_namespace"]:
        return facts
    attributes = {"volumeId": facts["volume_id"], "zone": p["availability_zone"], "region": facts["region"]}
    return _propose(p, facts, driver=_k8s_manifests.IBM_VPC_CSI_DRIVER, volume_attributes=attributes, region=facts["region"])


def _propose(p, facts, **csi):
    """The PersistentVolume of the new volume and the claim it is reserved for, into ``facts``."""
    pv_name = p["pv_name"] or "restored-%s" % facts["volume_id"]
    try:
        facts["persistent_volume"] = _k8s_manifests.persistent_volume(
            pv_name, facts["volume_id"], facts["size_gib"], p["availability_zone"], facts["pvc_name"], facts["pvc_namespace"],
            storage_class=p["storage_class"], fs_type=p["fs_type"], access_modes=p["access_modes"], reclaim_policy=p["reclaim_policy"],
            labels=p["labels"], zone_label=p["zone_label"],
            annotations={"vmimage.replication/restored-from": facts["snapshot_id"]}, **csi)
        facts["persistent_volume_claim"] = _k8s_manifests.persistent_volume_claim(
            facts["pvc_name"], facts["pvc_namespace"], pv_name, facts["size_gib"], storage_class=p["storage_class"],
            access_modes=p["access_modes"], labels=p["labels"])
    except ValueError as exc:
        raise ReplicationError("Failed to write the Kubernetes objects of volume %s: %s" % (facts["volume_id"], exc), **facts) from None
    return facts


def main():
    spec = dict(_aws.AWS_OPTIONS)
    spec.update(_ibm_vpc_client.OPTIONS)
    spec.update(
        provider=dict(type="str", choices=["aws", "ibm_vpc"], default="aws"),
        encryption_key=dict(type="str", no_log=False),
        snapshot_id=dict(type="str", required=True),
        snapshot_region=dict(type="str"),
        availability_zone=dict(type="str", required=True),
        volume_type=dict(type="str"),
        iops=dict(type="int"),
        size=dict(type="int"),
        kms_key_id=dict(type="str", no_log=False),
        pv_name=dict(type="str"),
        pvc_name=dict(type="str"),
        pvc_namespace=dict(type="str"),
        storage_class=dict(type="str", default=""),
        fs_type=dict(type="str", default="ext4"),
        access_modes=dict(type="list", elements="str", default=["ReadWriteOnce"]),
        reclaim_policy=dict(type="str", choices=["Retain", "Delete"], default="Retain"),
        labels=dict(type="dict"),
        zone_label=dict(type="str", default="topology.kubernetes.io/zone"),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=21600),
        wait_sleep=dict(type="float", default=15.0),
    )
    ReplicationModule(spec, action="restore snapshot", mutually_exclusive=_aws.AWS_CONSTRAINTS["mutually_exclusive"],
                      required_together=_aws.AWS_CONSTRAINTS["required_together"]).run(run)


if __name__ == "__main__":
    main()
