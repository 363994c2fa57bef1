# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  cos:
    description:
      - Connection to IBM Cloud Object Storage or any S3-compatible endpoint.
      - Authenticate with HMAC keys (O(cos.access_key_id) and O(cos.secret_access_key))
        or with an IBM Cloud API key (O(cos.api_key)), not both.
      - Set it once for all modules with C(module_defaults) and C(group/vmimage.replication.cloud).
    type: dict
    required: true
    suboptions:
      endpoint:
        description:
          - URL of the S3 endpoint, for example V(https://s3.us-south.cloud-object-storage.appdomain.cloud).
          - Falls back to the environment variables E(COS_ENDPOINT), then E(AWS_ENDPOINT_URL).
        type: str
        required: true
      region:
        description:
          - Region the bucket lives in. Requests are signed for it, and a bucket found in another
            region is reported as such.
          - Falls back to E(COS_REGION), then E(AWS_REGION).
        type: str
      access_key_id:
        description:
          - HMAC access key id. Falls back to E(COS_HMAC_ACCESS_KEY_ID), then E(AWS_ACCESS_KEY_ID).
        type: str
      secret_access_key:
        description:
          - HMAC secret access key. Never logged, never returned.
          - Falls back to E(COS_HMAC_SECRET_ACCESS_KEY), then E(AWS_SECRET_ACCESS_KEY).
        type: str
      api_key:
        description:
          - IBM Cloud API key, exchanged for IAM tokens at O(cos.iam_endpoint). Never logged.
          - Falls back to E(IBMCLOUD_API_KEY), then E(IC_API_KEY).
        type: str
      service_instance_id:
        description:
          - CRN or id of the Cloud Object Storage instance, used with O(cos.api_key).
          - Falls back to E(COS_SERVICE_INSTANCE_ID).
        type: str
      iam_endpoint:
        description:
          - IAM token endpoint used with O(cos.api_key).
        type: str
        default: https://iam.cloud.ibm.com/identity/token
      validate_certs:
        description:
          - Verify the endpoint's TLS certificate.
        type: bool
        default: true
      ca_bundle:
        description:
          - CA bundle to verify the endpoint's certificate with.
        type: path
      sealed:
        description:
          - Credentials sealed with AES-256-GCM by the collection's sealing function or CLI (C(extensions/seal.py)),
            opened with O(cos.seal_key) in the module process on the host that uses them. Never logged.
          - The blob holds the cos dict, or a dict whose C(cos) key holds it; its values take the place of O(cos.access_key_id),
            O(cos.secret_access_key), O(cos.api_key) and the other suboptions. A changed or cut blob fails clearly.
        type: str
      seal_key:
        description:
          - Key that opens O(cos.sealed), read on the controller from E(VMIMAGE_SEAL_KEY)
            with C(lookup('ansible.builtin.env', 'VMIMAGE_SEAL_KEY')). Never logged.
        type: str
"""
