# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The option groups of the cloud adapters, apart from the adapters.

Every source or target module declares the options of every adapter (the argument spec comes before the choice of
provider), so building the spec must not import a cloud SDK: the adapters that import one (ibm_vpc, openstack, powervs)
keep their options here, and a module then loads only the SDK of the provider it runs. Light adapters (local,
bucket_catalog) keep ``OPTIONS`` in their own module. Each group is one dict option, so it clashes with no other cloud's.
"""

from __future__ import annotations

from ansible.module_utils.basic import env_fallback

DEFAULT_IAM_URL = "https://iam.cloud.ibm.com"
POWERVS_STORAGE_TYPES = ["tier0", "tier1", "tier3", "tier5k"]
POWERVS_OS_TYPES = ["aix", "ibmi", "rhel", "sles"]

# Provider / target ibm_vpc (doc fragment vmimage.replication.ibm_vpc).
IBM_VPC = dict(
    ibm_vpc=dict(type="dict", options=dict(
        api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["IC_API_KEY", "IBMCLOUD_API_KEY"])),
        region=dict(type="str"),
        endpoint=dict(type="str"),
        iam_url=dict(type="str", default=DEFAULT_IAM_URL),
        validate_certs=dict(type="bool", default=True),
        max_retries=dict(type="int", default=4),
        retry_interval=dict(type="float", default=30.0),
        wait_sleep=dict(type="float"),
        by_id_dir=dict(type="path", default="/dev/disk/by-id"),
        volume_profile=dict(type="str", default="general-purpose"),
        operating_system=dict(type="str"),
        cos_region=dict(type="str"),
    )),
)

# Provider and target openstack (doc fragment vmimage.replication.openstack), named as openstack.cloud users know them.
OPENSTACK = dict(
    openstack=dict(type="dict", options=dict(
        cloud=dict(type="str"),
        auth=dict(type="dict", no_log=True),
        auth_type=dict(type="str"),
        region_name=dict(type="str"),
        interface=dict(type="str", choices=["public", "internal", "admin"], default="public", aliases=["endpoint_type"]),
        validate_certs=dict(type="bool", aliases=["verify"]),
        ca_cert=dict(type="path", aliases=["cacert"]),
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=1800),
        wait_sleep=dict(type="float"),
        min_disk=dict(type="int"),
        min_ram=dict(type="int"),
        properties=dict(type="dict"),
        visibility=dict(type="str", choices=["private", "shared", "community", "public"], default="private"),
        import_method=dict(type="str", choices=["upload", "web-download"], default="upload"),
        by_id_dir=dict(type="path", default="/dev/disk/by-id"),
        direct_snapshot=dict(type="dict", options=dict(
            ceph_conf=dict(type="path", default="/etc/ceph/ceph.conf"),
            ceph_user=dict(type="str", default="admin"),
            keyring=dict(type="path", no_log=False),
            volumes_pool=dict(type="str", default="volumes"),
            images_pool=dict(type="str", default="images"),
        )),
    )),
)

# Target powervs (doc fragment vmimage.replication.catalog, option powervs).
POWERVS = dict(
    powervs=dict(type="dict", options=dict(
        workspace_id=dict(type="str", required=True),
        crn=dict(type="str", required=True),
        region=dict(type="str"),
        url=dict(type="str"),
        api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["IBMCLOUD_API_KEY", "IC_API_KEY"])),
        iam_url=dict(type="str", default=DEFAULT_IAM_URL),
        storage_type=dict(type="str", choices=POWERVS_STORAGE_TYPES),
        storage_pool=dict(type="str"),
        affinity_policy=dict(type="str", choices=["affinity", "anti-affinity"]),
        affinity_volume=dict(type="str"),
        os_type=dict(type="str", choices=POWERVS_OS_TYPES),
        bucket_access=dict(type="str", choices=["private", "public"], default="private"),
        validate_certs=dict(type="bool", default=True),
        max_retries=dict(type="int", default=4),
        retry_interval=dict(type="float", default=30.0),
    )),
)

# provider / target name -> its option group, for the adapters listed above.
BY_PROVIDER = {"ibm_vpc": IBM_VPC, "openstack": OPENSTACK, "powervs": POWERVS}
