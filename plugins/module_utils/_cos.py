# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Object storage access (IBM COS or any S3 endpoint) through ibm-cos-sdk."""

from __future__ import annotations

import contextlib
import datetime
import re
import traceback

from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError
from ansible_collections.vmimage.replication.plugins.module_utils._naming import CREATED_BY

try:
    import ibm_boto3
    from ibm_botocore.client import Config
    from ibm_botocore.exceptions import BotoCoreError, ClientError
    # A response body that breaks off (the SDK's HTTP library raises it unwrapped); _bucket_lock reads it from here.
    from urllib3.exceptions import ProtocolError as BrokenRead  # pylint: disable=unused-import

    IMPORT_ERROR = None
except ImportError:  # pragma: no cover - exercised only where the SDK is missing
    ibm_boto3 = Config = None
    BotoCoreError = ClientError = Exception

    class BrokenRead(Exception):
        """Stands in for urllib3's ProtocolError where the SDK (so urllib3) is missing."""
    IMPORT_ERROR = traceback.format_exc()


def connect(cos, max_pool_connections=10):
    """An S3 client for the ``cos`` option dict (HMAC keys or IAM API key).

    ``max_pool_connections`` bounds the HTTP connections the client keeps: at least the number of threads using it.
    """
    endpoint = str(cos.get("endpoint") or "")
    if not endpoint.lower().startswith(("https://", "http://")):
        raise ReplicationError(
            "Failed to connect to cos.endpoint %s: it is not an http(s) URL; set cos.endpoint to a URL such as "
            "https://s3.us-south.cloud-object-storage.appdomain.cloud" % endpoint, endpoint=endpoint,
        )
    try:
        return _client(cos, max(10, int(max_pool_connections)))
    except ValueError as exc:  # the SDK's answer to an endpoint that is not a URL
        raise ReplicationError(
            "Failed to connect to cos.endpoint %s: %s; set cos.endpoint to a URL such as https://s3.us-south.cloud-object-storage.appdomain.cloud"
            % (cos.get("endpoint"), exc), endpoint=cos.get("endpoint"),
        ) from None


def _client(cos, pool):
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
            config=Config(signature_version="oauth", retries=retries, s3={"addressing_style": "path"}, max_pool_connections=pool),
        )
    return ibm_boto3.client(
        "s3",
        aws_access_key_id=cos["access_key_id"],
        aws_secret_access_key=cos["secret_access_key"],
        endpoint_url=cos["endpoint"],
        region_name=cos.get("region") or "us-east-1",
        verify=verify,
        config=Config(signature_version="s3v4", retries=retries, s3={"addressing_style": "path"}, max_pool_connections=pool),
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
    "BadDigest": "the data the endpoint received does not match its MD5; retry, and check the network path",
    "EntityTooSmall": "a part was smaller than the 5 MiB S3 minimum; raise part_size_mb",
    "403": "access was denied (the response carried no detail); check cos.access_key_id, cos.secret_access_key "
    "and that they may use this bucket",
    "404": "not found; check the bucket name and cos.endpoint",
    "WrongRegion": "the bucket lives in another region",
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


@contextlib.contextmanager
def naming_errors(action, cos, bucket, key=None, describe_os_error=None):
    """Make what an object-storage step raises a ReplicationError naming bucket, key and endpoint (never a secret).

    ``describe_os_error(exc)`` gives the message of a local OSError; without it an OSError passes as it is.
    """
    where = dict(bucket=bucket, endpoint=cos.get("endpoint"))
    if key is not None:
        where["key"] = key
    try:
        yield
    except ReplicationError as exc:
        for name, value in where.items():
            exc.details.setdefault(name, value)
        raise
    except (ClientError, BotoCoreError) as exc:
        raise ReplicationError(explain(exc, action, cos, bucket, key), code=error_code(exc), **where) from None
    except OSError as exc:
        if describe_os_error is None:
            raise
        raise ReplicationError(describe_os_error(exc), **where) from None


_COS_LOCATION_SUFFIX = re.compile(r"-(standard|vault|cold|flex|smart|onerate[_-]active)$")
METADATA_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def bucket_region(location):
    """The region of a GetBucketLocation answer ('us-south-standard' -> 'us-south'), None when the endpoint gives none."""
    if not location:
        return None
    return _COS_LOCATION_SUFFIX.sub("", location)


def check_bucket(client, cos, bucket):
    """Fail early, with a clear message, when the bucket is missing, unreachable with these keys, or in another region.

    Endpoints that answer no location (many S3 servers) are taken to serve the bucket where it is.
    """
    try:
        location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except (ClientError, BotoCoreError, OSError, RuntimeError) as exc:
        if cos.get("api_key") and error_code(exc) is None and cos.get("endpoint") not in str(exc):
            # The request never reached the endpoint: the IAM token exchange failed.
            raise ReplicationError(
                "Failed to reach bucket %s at %s: no IAM token from %s (%s); check cos.api_key and cos.iam_endpoint"
                % (bucket, cos.get("endpoint"), cos.get("iam_endpoint"), exc), bucket=bucket, endpoint=cos.get("endpoint"), code="IAMToken",
            )
        raise ReplicationError(explain(exc, "reach", cos, bucket), bucket=bucket, endpoint=cos.get("endpoint"), code=error_code(exc))
    region = bucket_region(location)
    wanted = cos.get("region")
    if region and wanted and region != wanted:
        raise ReplicationError(
            "Failed to reach bucket %s at %s: WrongRegion: the bucket lives in region %s, not %s; "
            "use that region's endpoint in cos.endpoint and set cos.region to %s" % (bucket, cos.get("endpoint"), region, wanted, region),
            bucket=bucket, endpoint=cos.get("endpoint"), code="WrongRegion", bucket_region=region,
        )
    return region


def head(client, bucket, key):
    """The object at ``key`` as {size, etag, metadata (lower-case keys), last_modified}, or None when there is none."""
    try:
        response = client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return {
        "size": response.get("ContentLength"),
        "etag": (response.get("ETag") or "").strip('"'),
        "metadata": dict((name.lower(), value) for name, value in (response.get("Metadata") or {}).items()),
        "last_modified": utc_text(response.get("LastModified")),
    }


def utc_text(value):
    """A datetime as 'YYYY-MM-DDTHH:MM:SSZ' in UTC (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# What list_under_prefix pages through: the call, the list in each page, its time field, and the page markers.
LISTINGS = {
    "objects": ("list_objects_v2", "Contents", "LastModified", (("NextContinuationToken", "ContinuationToken"),)),
    "uploads": ("list_multipart_uploads", "Uploads", "Initiated", (("NextKeyMarker", "KeyMarker"), ("NextUploadIdMarker", "UploadIdMarker"))),
}


def older_than(items, seconds, now, field="time"):
    """The items whose ``field`` (an aware datetime) is at least ``seconds`` before ``now``; an unknown time counts as old."""
    limit = now - datetime.timedelta(seconds=seconds)
    return [item for item in items if item[field] is None or item[field] <= limit]


def list_under_prefix(client, bucket, prefix, kind, min_age=None, now=None):
    """Every object (``kind="objects"``: {key, size, time}) or in-progress multipart upload (``"uploads"``: {key, upload_id,
    time}) under ``prefix``, oldest first, through every page; with ``min_age`` seconds only those at least that old at ``now``."""
    call, entries, time_field, markers = LISTINGS[kind]
    found = []
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    while True:
        try:
            page = getattr(client, call)(**kwargs)
        except ClientError as exc:
            if kind == "uploads" and error_code(exc) == "NoSuchUpload":  # rclone answers so when there are none
                break
            raise
        for entry in page.get(entries) or []:
            item = {"key": entry["Key"], "time": entry.get(time_field)}
            item.update({"upload_id": entry["UploadId"]} if kind == "uploads" else {"size": entry.get("Size")})
            found.append(item)
        if not page.get("IsTruncated"):
            break
        for answer, request in markers:
            kwargs[request] = page.get(answer)
    found.sort(key=lambda item: (item["time"] is None, item["time"]))
    return older_than(found, min_age, now) if min_age is not None else found


def list_uploads(client, bucket, prefix=""):
    """In-progress multipart uploads under ``prefix``, oldest first: [{key, upload_id, initiated (datetime)}]."""
    return [{"key": u["key"], "upload_id": u["upload_id"], "initiated": u["time"]} for u in list_under_prefix(client, bucket, prefix, "uploads")]


def uploads_for_key(client, bucket, key):
    """In-progress multipart uploads of exactly ``key``, oldest first."""
    return [upload for upload in list_uploads(client, bucket, key) if upload["key"] == key]


def abort_upload(client, bucket, key, upload_id):
    """Abort a multipart upload; one that is already gone counts as aborted."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as exc:
        if error_code(exc) != "NoSuchUpload":
            raise


def delete_object(client, bucket, key):
    """Delete the object at ``key``; True when there was one."""
    if head(client, bucket, key) is None:
        return False
    client.delete_object(Bucket=bucket, Key=key)
    return True


def object_metadata(metadata, sha256):
    """The user metadata written on an uploaded object: lower-case keys, plus created-by and sha256."""
    result = {}
    for name, value in (metadata or {}).items():
        lowered = str(name).lower()
        if not METADATA_KEY.match(lowered):
            raise ReplicationError(
                "Failed to prepare metadata %s: keys must be lower-case letters, digits and hyphens (for example source-server)" % name
            )
        result[lowered] = "" if value is None else str(value)
    result["created-by"] = CREATED_BY
    result["sha256"] = sha256
    return result


def upload_file(client, bucket, key, path, part_size, concurrency, metadata, sha256=None, progress=None, keep_incomplete=False):
    """Upload ``path`` to ``key`` (resuming an interrupted multipart upload); see ``_multipart.upload``."""
    from ansible_collections.vmimage.replication.plugins.module_utils import _multipart

    return _multipart.upload(client, bucket, key, path, part_size, concurrency, metadata, sha256, progress, keep_incomplete)


COPY_LIMIT = 5 * 1024 ** 3  # the largest object one CopyObject may copy
COPY_PART = 1024 ** 3


def replace_metadata(client, bucket, key, size, metadata, copy_limit=COPY_LIMIT, part_size=COPY_PART):
    """Give the object at ``key`` (``size`` bytes) new user metadata, server side.

    S3 cannot change metadata in place: the object is copied onto itself, with one CopyObject up to
    5 GiB and as a multipart copy (UploadPartCopy of ranges) above that.
    """
    source = {"Bucket": bucket, "Key": key}
    if size <= copy_limit:
        client.copy_object(Bucket=bucket, Key=key, CopySource=source, Metadata=metadata, MetadataDirective="REPLACE")
        return
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
    try:
        parts = []
        for number, offset in enumerate(range(0, size, part_size), 1):
            last = min(offset + part_size, size) - 1
            answer = client.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, CopySource=source,
                                             CopySourceRange="bytes=%d-%d" % (offset, last))
            parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException as exc:
        try:
            abort_upload(client, bucket, key, upload_id)
        except Exception:  # pylint: disable=broad-except
            pass  # the copy's failure is the one to report
        if isinstance(exc, ClientError):
            raise ReplicationError(
                "Failed to set the metadata of s3://%s/%s: a server-side multipart copy (UploadPartCopy, needed above %d bytes) failed: %s; "
                "use an endpoint that supports UploadPartCopy"
                % (bucket, key, copy_limit, error_code(exc) or exc), bucket=bucket, key=key, code=error_code(exc)) from None
        raise


def set_metadata(client, bucket, key, size, metadata):
    """Give an object just uploaded its final metadata (sha256 included); if that fails, delete it rather than leave it without.

    Objects without a sha256 are not images of this collection: image_import refuses them, an upload replaces them.
    """
    try:
        replace_metadata(client, bucket, key, size, metadata)
    except (ClientError, BotoCoreError, ReplicationError) as exc:
        cause = exc.msg if isinstance(exc, ReplicationError) else "%s: %s" % (error_code(exc), exc)
        try:
            delete_object(client, bucket, key)
            fate = "it was deleted"
        except Exception:  # pylint: disable=broad-except
            fate = "it is left without them; delete it or run again"
        raise ReplicationError("Failed to set the metadata (sha256...) of s3://%s/%s after its upload: %s; %s"
                               % (bucket, key, cause, fate), bucket=bucket, key=key) from None
