# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The Kubernetes objects of a restored volume: a PersistentVolume for the cloud's CSI driver (EBS: ``ebs.csi.aws.com``, not the
deprecated in-tree ``awsElasticBlockStore``; IBM VPC: ``vpc.block.csi.ibm.io``, with the volume attributes and the zone and region
node terms of IBM's static-provisioning example), pre-bound to a proposed PersistentVolumeClaim. Pure: nothing here talks to a
cluster. No region, label or storage class is assumed: what is not given is left out (``storageClassName: ""`` binds
statically, so no default class provisions a new volume instead).
"""

from __future__ import annotations

import re

CSI_DRIVER = "ebs.csi.aws.com"
IBM_VPC_CSI_DRIVER = "vpc.block.csi.ibm.io"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def check_name(value, what):
    """A DNS-1123 subdomain (names of PVs, PVCs, namespaces), else ValueError naming what to fix."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError("%s %r is not a Kubernetes name: lower-case letters, digits, '-' and '.', starting and ending with a letter "
                         "or digit, at most 253 characters" % (what, value))
    return value


def persistent_volume(name, volume_id, size_gib, zone, claim_name, claim_namespace, storage_class="", fs_type="ext4",
                      access_modes=("ReadWriteOnce",), reclaim_policy="Retain", labels=None, annotations=None, zone_label=ZONE_LABEL,
                      driver=CSI_DRIVER, volume_attributes=None, region=None, region_label=REGION_LABEL):
    """A PersistentVolume over volume ``volume_id`` in ``zone`` (and ``region``, when given: a second node term), reserved
    (claimRef) for ``claim_namespace/claim_name``, served by CSI ``driver`` with ``volume_attributes``."""
    metadata = dict(name=check_name(name, "persistent volume name"))
    if labels:
        metadata["labels"] = dict(labels)
    if annotations:
        metadata["annotations"] = dict(annotations)
    csi = dict(driver=driver, volumeHandle=volume_id, fsType=fs_type)
    if volume_attributes:
        csi["volumeAttributes"] = {key: str(value) for key, value in volume_attributes.items()}
    terms = [dict(key=zone_label, operator="In", values=[zone])]
    if region:
        terms.append(dict(key=region_label, operator="In", values=[region]))
    return dict(
        apiVersion="v1", kind="PersistentVolume", metadata=metadata,
        spec=dict(
            capacity=dict(storage="%dGi" % int(size_gib)),
            accessModes=list(access_modes),
            persistentVolumeReclaimPolicy=reclaim_policy,
            storageClassName=storage_class or "",
            volumeMode="Filesystem",
            csi=csi,
            claimRef=dict(namespace=check_name(claim_namespace, "claim namespace"), name=check_name(claim_name, "claim name")),
            nodeAffinity=dict(required=dict(nodeSelectorTerms=[dict(matchExpressions=terms)]))
        ),
    )


def persistent_volume_claim(name, namespace, volume_name, size_gib, storage_class="", access_modes=("ReadWriteOnce",), labels=None):
    """The proposed claim that binds to ``volume_name`` (edit its name or namespace to restore beside the original)."""
    metadata = dict(name=check_name(name, "claim name"), namespace=check_name(namespace, "claim namespace"))
    if labels:
        metadata["labels"] = dict(labels)
    return dict(
        apiVersion="v1", kind="PersistentVolumeClaim", metadata=metadata,
        spec=dict(
            accessModes=list(access_modes),
            storageClassName=storage_class or "",
            volumeMode="Filesystem",
            volumeName=check_name(volume_name, "persistent volume name"),
            resources=dict(requests=dict(storage="%dGi" % int(size_gib))),
        ),
    )
