# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    # The options of provider / target ibm_vpc (plugins/module_utils/_ibm_vpc_client.py, OPTIONS).
    DOCUMENTATION = r"""
options:
  ibm_vpc:
    description:
      - IBM Cloud VPC, with O(ignore:provider=ibm_vpc) (the source region) or O(ignore:target=ibm_vpc) (the region whose image library receives the images).
    type: dict
    suboptions:
      api_key:
        description:
          - IBM Cloud API key. If not set, the value of E(IC_API_KEY) or E(IBMCLOUD_API_KEY).
          - Never logged, returned, put in an error message or on a command line.
        type: str
      region:
        description:
          - The VPC region, for example V(us-south); the API is then V(https://<region>.iaas.cloud.ibm.com/v1).
        type: str
      endpoint:
        description:
          - The VPC API URL (with its V(/v1)), instead of the one O(ibm_vpc.region) gives (a private endpoint, a test server).
          - A C({region}) in it is replaced by the region of each call (modules that work in several regions, such as
            M(vmimage.replication.snapshot_copy)).
        type: str
      iam_url:
        description:
          - The IAM service that turns the API key into tokens (renewed before they expire).
        type: str
        default: https://iam.cloud.ibm.com
      validate_certs:
        description:
          - Check the TLS certificates of the VPC API and IAM.
        type: bool
        default: true
      max_retries:
        description:
          - How many times a call answered 429 (after its Retry-After) or 5xx is retried.
        type: int
        default: 4
      retry_interval:
        description:
          - Longest pause in seconds between retries (the backoff grows up to it).
        type: float
        default: 30.0
      wait_sleep:
        description:
          - Seconds between two looks at what a call waits for (a snapshot becoming stable, a volume available, an attachment
            attached, an image available, a deletion).
          - Used by the modules that have no O(ignore:wait_sleep) of their own (for example M(vmimage.replication.snapshot),
            M(vmimage.replication.volume_attach), M(vmimage.replication.image_import)); a module's own O(ignore:wait_sleep) wins. Default V(2).
        type: float
      by_id_dir:
        description:
          - Where the conversion host lists its disks by serial; M(vmimage.replication.volume_attach) finds the attached volume there as
            C(virtio-<first 20 characters of the attachment's device id>), never by guessing C(/dev/vdX).
        type: path
        default: /dev/disk/by-id
      volume_profile:
        description:
          - Profile of the temporary volume made from a snapshot for the conversion host.
        type: str
        default: general-purpose
      operating_system:
        description:
          - Target only - operating system of imported images (for example V(ubuntu-22-04-amd64)); normally the source's, as
            M(vmimage.replication.server_info) returns it. One the target region does not offer fails before anything is imported.
        type: str
      cos_region:
        description:
          - Target only - region of the bucket in the image's C(cos://<region>/<bucket>/<key>) address; default O(ignore:cos.region), then O(ibm_vpc.region).
        type: str
requirements:
  - ibm-vpc
  - ibm-cloud-sdk-core
"""
