# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Object storage access (IBM COS or any S3 endpoint) through ibm-cos-sdk."""

from __future__ import annotations

import traceback

try:
    import ibm_boto3
    from ibm_botocore.client import Config
    from ibm_botocore.exceptions import BotoCoreError, ClientError

    IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only where the SDK is missing
    ibm_boto3 = Config = None
    BotoCoreError = ClientError = Exception
    IMPORT_ERROR = traceback.format_exc()

CREATED_BY = "vmimage.replication"


def connect(cos):
    """An S3 client for the ``cos`` option dict (HMAC keys or IAM API key)."""
    retries = {"max_attempts": 8, "mode": "standard"}
    verify = cos.get("ca_bundle") or cos.get("validate_certs", True)
    if cos.get("api_key"):
        return ibm_boto3.client(
            "s3",
            ibm_api_key_id=cos["api_key"],
            ibm_service_instance_id=cos.get("service_instance_id"),
            ibm_auth_endpoint=cos.get("iam_endpoint"),
            endpoint_url=cos["endpoint"],
            region_name=cos.get("region"),
            verify=verify,
            config=Config(signature_version="oauth", retries=retries, s3={"addressing_style": "path"}),
        )
    return ibm_boto3.client(
        "s3",
        aws_access_key_id=cos["access_key_id"],
        aws_secret_access_key=cos["secret_access_key"],
        endpoint_url=cos["endpoint"],
        region_name=cos.get("region") or "us-east-1",
        verify=verify,
        config=Config(signature_version="s3v4", retries=retries, s3={"addressing_style": "path"}),
    )
