# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    # Options of the modules that read or write a server's images in the target image library.
    DOCUMENTATION = r"""
options:
  target:
    description:
      - The image library; its adapter answers every import the same way, and the rotation and retention rules are the same for all.
      - V(bucket_catalog) keeps the catalog in the bucket that holds the images.
      - V(ibm_vpc) registers the images in an IBM Cloud VPC region's image library (from their objects in the bucket).
      - V(powervs) imports the images (OVA) into an IBM Power Virtual Server workspace's boot image catalog; see O(powervs).
      - V(openstack) uploads the images (QCOW2) into an OpenStack region's Glance; see O(openstack).
    type: str
    choices: [bucket_catalog, ibm_vpc, openstack, powervs]
    default: bucket_catalog
  bucket:
    description:
      - Bucket that holds the image objects (and, with O(target=bucket_catalog), the catalog).
    type: str
    required: true
  prefix:
    description:
      - Key prefix under which each server has a folder C(<server>/) with its images and catalog.
    type: str
    default: images/
  server:
    description:
      - Name of the source server. Letters, digits, V(.), V(_) and V(-).
    type: str
    required: true
  powervs:
    description:
      - The IBM Power Virtual Server workspace, with O(target=powervs).
      - PowerVS cannot rename images, so each import is named C(<server>-<YYYYMMDD-HHMMSS>) after its export time and the latest
        is the newest active image named so; retention only touches images named so.
      - PowerVS reads the bucket with the HMAC keys of O(cos) (O(cos.access_key_id), O(cos.secret_access_key)) in region O(cos.region).
    type: dict
    suboptions:
      workspace_id:
        description: GUID of the workspace (cloud instance).
        type: str
        required: true
      crn:
        description: CRN of the workspace; sent as the C(CRN) header of every call.
        type: str
        required: true
      region:
        description: PowerVS region of the workspace (V(us-south), V(dal10)...); gives the API URL C(https://<region>.power-iaas.cloud.ibm.com).
        type: str
      url:
        description: API URL, instead of the one O(powervs.region) gives.
        type: str
      api_key:
        description:
          - IBM Cloud API key.
          - If not set, the environment variable E(IBMCLOUD_API_KEY), then E(IC_API_KEY), is used.
        type: str
      iam_url:
        description: IAM URL (the token is requested at C(<iam_url>/identity/token) and renewed before it expires).
        type: str
        default: https://iam.cloud.ibm.com
      storage_type:
        description: Storage type of the image; must be offered by the workspace.
        type: str
        choices: [tier0, tier1, tier3, tier5k]
      storage_pool:
        description: Storage pool of the image; when set, PowerVS ignores O(powervs.storage_type) and the affinity.
        type: str
      affinity_policy:
        description: Storage affinity policy for the pool selection.
        type: str
        choices: [affinity, anti-affinity]
      affinity_volume:
        description: Volume the affinity policy refers to.
        type: str
      os_type:
        description: OS type of the image.
        type: str
        choices: [aix, ibmi, rhel, sles]
      bucket_access:
        description: V(private) buckets are read with the HMAC keys of O(cos); V(public) ones without keys.
        type: str
        choices: [private, public]
        default: private
      validate_certs:
        description: Verify the TLS certificates of the API and IAM.
        type: bool
        default: true
      max_retries:
        description: Retries of a call answered 429 or 5xx (Retry-After is honoured).
        type: int
        default: 4
      retry_interval:
        description: Longest wait between two retries, in seconds.
        type: float
        default: 30.0
"""

    # Attributes of a module that only reads.
    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Returns no diff.
  idempotent:
    support: full
    description: Reads only.
"""
