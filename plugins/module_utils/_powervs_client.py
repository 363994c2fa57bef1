# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The IBM Power Virtual Server (PowerVS) API calls the collection uses, on ibm-cloud-sdk-core.

``BaseService`` gives the IAM authenticator (the token is fetched with the API key and renewed before it
expires, so a wait of hours survives token expiry), retries of 429 and 5xx with backoff that honours
Retry-After (``enable_retries``), and ``ApiException`` for every other error. Every call carries the
workspace's ``CRN`` header, as the API requires.
"""

from __future__ import annotations

import json

from ansible_collections.vmimage.replication.plugins.module_utils import _provider_options
from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError

try:
    from ibm_cloud_sdk_core import ApiException, BaseService
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the modules through missing_required_lib
    IMPORT_ERROR = exc
    ApiException = Exception
    BaseService = object

DEFAULT_URL = "https://%s.power-iaas.cloud.ibm.com"
DEFAULT_IAM_URL = _provider_options.DEFAULT_IAM_URL


def explain(exc):
    """One line from an ApiException: status, and IBM's ``description`` / ``error`` / ``message``."""
    if isinstance(exc, ApiException) and getattr(exc, "http_response", None) is not None:
        try:
            body = exc.http_response.json()
        except ValueError:
            body = {}
        text = body.get("description") or body.get("message") or body.get("error") or body.get("errorMessage") or exc.message
        return "HTTP %s: %s" % (exc.code, text)
    return str(getattr(exc, "message", None) or exc)


class PowerVSClient(BaseService):
    """One workspace (cloud instance) of PowerVS."""

    def __init__(self, workspace_id, crn, api_key, url, iam_url=DEFAULT_IAM_URL, validate_certs=True, max_retries=4, retry_interval=30.0):
        if IMPORT_ERROR is not None:
            raise MissingDependency("Failed to use PowerVS: the Python library ibm-cloud-sdk-core is not installed; pip install ibm-cloud-sdk-core")
        if not api_key:
            raise ReplicationError("Failed to use PowerVS workspace %s: no API key; set powervs.api_key or IBMCLOUD_API_KEY" % workspace_id)
        authenticator = IAMAuthenticator(api_key, url=iam_url, disable_ssl_verification=not validate_certs)
        super().__init__(service_url=url, authenticator=authenticator, disable_ssl_verification=not validate_certs)
        self.enable_retries(max_retries=max_retries, retry_interval=retry_interval)
        self.workspace_id, self.crn = workspace_id, crn

    def call(self, method, path, body=None):
        """The JSON answer of ``method /pcloud/v1/cloud-instances/<workspace><path>``; raises ApiException."""
        request = self.prepare_request(
            method=method, url="/pcloud/v1/cloud-instances/%s%s" % (self.workspace_id, path),
            headers={"CRN": self.crn, "Accept": "application/json", "Content-Type": "application/json"},
            data=json.dumps(body) if body is not None else None,
        )
        return self.send(request).get_result()

    def workspace(self):
        return self.call("GET", "")

    def storage_types(self):
        answer = self.call("GET", "/storage-capacity/types") or {}
        return sorted({entry.get("storageType") for entry in answer.get("storageTypesCapacity") or [] if entry.get("storageType")})

    def images(self):
        return (self.call("GET", "/images") or {}).get("images") or []

    def image(self, image_id):
        return self.call("GET", "/images/%s" % image_id)

    def delete_image(self, image_id):
        return self.call("DELETE", "/images/%s" % image_id)

    def import_cos(self, body):
        return self.call("POST", "/cos-images", body)

    def job(self, job_id):
        return self.call("GET", "/jobs/%s" % job_id)
