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


_HINTS = {
    "InvalidAccessKeyId": "the access key id is not known to the endpoint; check cos.access_key_id",
    "SignatureDoesNotMatch": "the endpoint rejected the request signature; check cos.secret_access_key",
    "AccessDenied": "access was denied; check that the credentials may write to this bucket",
    "NoSuchBucket": "the bucket does not exist at this endpoint; create it, or check the bucket name and cos.endpoint",
    "PermanentRedirect": "the bucket lives in another region; use that region's endpoint in cos.endpoint and cos.region",
    "AuthorizationHeaderMalformed": "the bucket lives in another region; set cos.region (and cos.endpoint) to the bucket's region",
    "IllegalLocationConstraintException": "the bucket lives in another region; use that region's endpoint",
    "NoSuchKey": "the object does not exist",
    "NoSuchUpload": "the multipart upload no longer exists (it was aborted or completed)",
}


def error_code(exc):
    """The S3 error code of a ClientError ('NoSuchBucket', '404', ...), or None."""
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code")


def explain(exc, action, cos, bucket, key=None):
    """A 'Failed to <action> ...: <cause>; <hint>' message that names bucket and endpoint, never a secret."""
    where = "s3://%s/%s" % (bucket, key) if key else "bucket %s" % bucket
    code = error_code(exc)
    cause = "%s: %s" % (code, _HINTS[code]) if code in _HINTS else str(exc)
    return "Failed to %s %s at %s: %s" % (action, where, cos.get("endpoint"), cause)
