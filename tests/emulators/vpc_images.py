# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Images of the VPC emulator: import from Cloud Object Storage, checked with qemu-img; operating systems in vpc_images_os.

``POST /images`` with ``file.href`` ``cos://<region>/<bucket>/<key>`` (the key ends in ``.qcow2`` or ``.vhd``, which
names the format) answers 201 with the image ``pending`` (status_reasons ``image_request_queued``, then
``image_request_in_progress``); a thread reads the object from the test S3 server (``emulator.s3``: endpoint, access_key,
secret_key, optional region), runs ``qemu-img info`` / ``check`` on it and, no sooner than the emulator's delay after
the request, makes it ``available`` (file checksums.sha256 and size, minimum_provisioned_size, zones) or ``failed``
with status_reasons ``image_data_corrupted`` naming the cause: the object is missing or unreadable, is not the format its
extension names, or its bucket is one the Image Service for VPC was not authorised to read (the IAM service-to-service
authorisation; a test turns it off per bucket). The reference's reason codes have none for access, so the message says it.
An available image's bytes become ``<data_dir>/<id>.img`` (raw) so an instance made from it boots those bytes.
``DELETE`` answers 202, the image is ``deleting``, then gone. Names are unique per region (409), the ``image`` quota
knob of the core gives its quota error.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time

from tests.emulators import vpc_images_os
from tests.emulators.vpc_server import ApiError, public

GIB = 1024 ** 3
NAME_RE = re.compile(r"^-?([a-z]|[a-z][-a-z0-9]*[a-z0-9]|[0-9][-a-z0-9]*([a-z]|[-a-z][-a-z0-9]*[a-z0-9]))$")
HREF_RE = re.compile(r"^cos://(?P<region>[^/]+)/(?P<bucket>[^/]+)/(?P<key>.+)$")
FORMATS = {"qcow2": "qcow2", "vhd": "vpc"}  # extension -> the format qemu-img names
WORDS = ("amber", "brisk", "cedar", "delta", "ember", "fjord", "grove", "harbor", "ivory", "jasper", "kelp", "lumen")
PATCHABLE = ("name", "deprecation_at", "obsolescence_at", "allowed_use")


def _field(name, message, code="validation_invalid_value"):
    return ApiError(400, code, message, target={"name": name, "type": "field"})


def check_name(name):
    if not isinstance(name, str) or len(name) > 63 or not NAME_RE.match(name):
        raise _field("name", "The image name %r must be 1-63 lowercase letters, digits and hyphens, starting with a letter" % (name,),
                     "validation_invalid_name")
    if name.startswith("ibm-"):
        raise _field("name", "Image names starting with ibm- are reserved for system-provided images", "validation_invalid_name")


def _reason(code, message):
    return {"code": code, "message": message, "more_info": "https://cloud.ibm.com/docs/vpc?topic=vpc-managing-custom-images"}


def _failed(message):
    return {"status": "failed", "status_reasons": [_reason("image_data_corrupted", message)]}


def new_image(emu, region, name, os_record, file_href=None, resource_group=None, encryption_key=None):
    rec = emu.new_record(
        "image", region, "images", name=name, status="pending", visibility="private", resource_type="image",
        encryption="user_managed" if encryption_key else "none", file={}, operating_system=os_record,
        user_data_format=os_record["user_data_format"], status_reasons=[_reason("image_request_queued", "The import is queued")],
        catalog_offering={"managed": False}, zones=[],
        allowed_use={"api_version": "2024-11-12", "bare_metal_server": "true", "instance": "true"})
    if resource_group:
        rec["resource_group"] = dict(rec["resource_group"], id=resource_group)
    if encryption_key:
        rec["encryption_key"] = {"crn": encryption_key}
    rec["_file_href"] = file_href
    return rec


def _available(emu, region, path, virtual_size):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    size = os.path.getsize(path)
    return {"status": "available", "status_reasons": [], "file": {"checksums": {"sha256": digest.hexdigest()}, "size": max(1, math.ceil(size / GIB))},
            "minimum_provisioned_size": max(1, math.ceil(virtual_size / GIB)),
            "zones": [emu.zone_ref(region, "%s-%d" % (region, n)) for n in (1, 2, 3)]}


def _download(emu, href, path):
    """The object at ``href`` into ``path``; an error text when it cannot be read, else None."""
    import ibm_boto3
    from ibm_botocore.client import Config
    from ibm_botocore.exceptions import BotoCoreError, ClientError

    where = HREF_RE.match(href)
    if where.group("bucket") in emu.denied_buckets:
        return ("Image Service for VPC is not authorized to read bucket %s: create an IAM service-to-service authorization "
                "from VPC Infrastructure Services (Image Service for VPC) to Cloud Object Storage with the Reader role" % where.group("bucket"))
    s3 = emu.s3 or {}
    if not s3.get("endpoint"):
        return "The image file %s could not be read: the emulator has no S3 endpoint (--s3-endpoint)" % href
    client = ibm_boto3.client("s3", endpoint_url=s3["endpoint"], aws_access_key_id=s3.get("access_key"),
                              aws_secret_access_key=s3.get("secret_key"), region_name=s3.get("region") or where.group("region"),
                              config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 2}))
    try:
        client.download_file(where.group("bucket"), where.group("key"), path)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NoSuchBucket", "NotFound"):
            return "The image file %s was not found in Cloud Object Storage" % href
        return "The image file %s could not be read from Cloud Object Storage (%s)" % (href, code or "error")
    except (BotoCoreError, OSError) as exc:
        return "The image file %s could not be read from Cloud Object Storage (%s)" % (href, type(exc).__name__)
    return None


def inspect(emu, region, href, image_id):
    """Fetch and check the file: the fields of an available or a failed image."""
    extension = href.rsplit(".", 1)[1].lower()
    fmt = FORMATS[extension]
    work = tempfile.mkdtemp(prefix="vpc-image-", dir=emu.data_dir or None)
    try:
        path = os.path.join(work, "object")
        problem = _download(emu, href, path)
        if problem:
            return _failed(problem)
        info = subprocess.run(["qemu-img", "info", "--output=json", path], capture_output=True, text=True, check=False)
        seen = json.loads(info.stdout).get("format") if info.returncode == 0 else None
        if seen != fmt:
            return _failed("The image file %s is not a %s image (qemu-img sees %s)" % (href, extension, seen or "no image"))
        check = subprocess.run(["qemu-img", "check", "-f", fmt, path], capture_output=True, text=True, check=False)
        if fmt == "qcow2" and check.returncode in (1, 2):
            return _failed("The image file %s is corrupt: qemu-img check: %s" % (href, (check.stdout + check.stderr).strip()[-300:]))
        changes = _available(emu, region, path, json.loads(info.stdout).get("virtual-size") or 0)
        if emu.data_dir:
            raw = os.path.join(emu.data_dir, image_id + ".img")
            converted = subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", path, raw], capture_output=True, check=False)
            if converted.returncode != 0:
                return _failed("The image file %s could not be read as %s" % (href, fmt))
        return changes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_import(emu, rec, region, started):
    with emu.lock:
        if rec["status"] == "pending":
            rec["status_reasons"] = [_reason("image_request_in_progress", "The image is being imported")]
    changes = inspect(emu, region, rec["_file_href"], rec["id"])
    with emu.lock:
        if emu.store.get("image", {}).get(rec["id"]) is not rec or rec["status"] != "pending":
            drop_file(emu, rec["id"])  # deleted while importing
            return
        emu.later(rec, max(0.0, started + emu.delay - time.monotonic()), changes)
        rec["_due"].sort(key=lambda due: due[0])  # a date patched in meanwhile may be due later


def drop_file(emu, rid):
    if emu.data_dir and os.path.exists(os.path.join(emu.data_dir, rid + ".img")):
        os.unlink(os.path.join(emu.data_dir, rid + ".img"))


def _listed(items, query):
    for key in ("name", "visibility", "resource_group.id"):
        if key in query:
            items = [i for i in items if (i["resource_group"]["id"] if key == "resource_group.id" else i.get(key)) == query[key]]
    for key in ("status", "user_data_format"):
        if key in query:
            wanted = set(query[key].split(","))
            items = [i for i in items if i.get(key) in wanted]
    if "remote.account.id" in query and query["remote.account.id"] != "null":
        items = []  # no image of this emulator is remote (shared from another account)
    return items


def _from_volume(emu, region, body, name):
    """An image of a volume that has an operating system and is not in use: its bytes copied, available after the delay."""
    ident = body["source_volume"]
    vid = ident.get("id") or (ident.get("href") or ident.get("crn") or "").replace(":", "/").rstrip("/").rsplit("/", 1)[-1]
    volume = emu.find("volume", region, vid)
    if not volume.get("operating_system"):
        raise _field("source_volume", "Volume %s has no operating_system, so no image can be made of it" % vid, "volume_no_operating_system")
    if volume.get("active") or volume.get("busy"):
        raise ApiError(409, "volume_in_use", "Volume %s is active or busy; stop its instance first" % vid)
    os_record = vpc_images_os.find(emu, region, volume["operating_system"])  # the full OperatingSystem, as an image shows it
    rec = new_image(emu, region, name, os_record, None, (body.get("resource_group") or {}).get("id"))
    rec["source_volume"] = {"id": volume["id"], "crn": volume["crn"], "href": volume["href"], "name": volume["name"], "resource_type": "volume"}
    source = os.path.join(emu.data_dir, volume["id"] + ".img") if emu.data_dir else None
    if source and os.path.exists(source):
        shutil.copyfile(source, os.path.join(emu.data_dir, rec["id"] + ".img"))
    emu.later(rec, emu.delay, {"status": "available", "status_reasons": [], "file": {"size": volume["capacity"]},
                               "minimum_provisioned_size": volume["capacity"],
                               "zones": [emu.zone_ref(region, "%s-%d" % (region, n)) for n in (1, 2, 3)]})
    return rec


def _unique(emu, region, name):
    check_name(name)
    if any(r["name"] == name for r in emu.records("image", region)):
        raise ApiError(409, "validation_unique_failed", "The image name %s is already in use in region %s" % (name, region),
                       target={"name": "name", "type": "field"})


def _check_quota(emu, region):
    """The per-region image quota (control ``/image-quotas``), beside the core's quota per kind."""
    limit = emu.image_quotas.get(region)
    if limit is not None and len(emu.records("image", region)) >= limit:
        raise ApiError(400, "over_quota", "The image quota of %d in region %s is exceeded" % (limit, region))


def create(emu, region, body):
    body = body or {}
    _check_quota(emu, region)
    if body.get("source_volume"):
        name = body.get("name") or "-".join(random.sample(WORDS, 3))
        _unique(emu, region, name)
        return _from_volume(emu, region, body, name)
    href = (body.get("file") or {}).get("href")
    if not href:
        raise _field("file", "file.href (cos://<region>/<bucket>/<key>) is required", "validation_required_field")
    where = HREF_RE.match(href)
    if not where or where.group("key").rsplit(".", 1)[-1].lower() not in FORMATS:
        raise _field("file.href", "The file href %s must be cos://<region>/<bucket>/<key> and the key end in .qcow2 or .vhd" % href,
                     "validation_invalid_format")
    os_record = vpc_images_os.find(emu, region, body.get("operating_system") or {})
    if not os_record["allow_user_image_creation"]:
        raise _field("operating_system", "Operating system %s does not allow user image creation" % os_record["name"],
                     "operating_system_not_allowed")
    if bool(body.get("encrypted_data_key")) != bool(body.get("encryption_key")):
        raise _field("encrypted_data_key", "encrypted_data_key and encryption_key are given together", "validation_required_field")
    name = body.get("name") or "-".join(random.sample(WORDS, 3))
    _unique(emu, region, name)
    key_ref = body.get("encryption_key") or {}
    rec = new_image(emu, region, name, os_record, href, (body.get("resource_group") or {}).get("id"), key_ref.get("crn") or key_ref.get("id"))
    if emu.take_failure("image"):
        emu.later(rec, emu.delay, _failed("The image file %s could not be imported (failure injected)" % href))
    else:
        threading.Thread(target=_run_import, args=(emu, rec, region, time.monotonic()), daemon=True).start()
    return rec


def register(emu):
    vpc_images_os.register(emu)
    emu.denied_buckets = set()
    emu.image_quotas = {}  # region -> how many images it may hold

    def authorise_bucket(bucket, authorised=True):
        with emu.lock:
            (emu.denied_buckets.discard if authorised else emu.denied_buckets.add)(bucket)

    emu.authorise_bucket = authorise_bucket

    def list_images(region, params, query, body, headers):
        return 200, emu.page(region, "images", _listed(emu.records("image", region), query), query)

    def create_image(region, params, query, body, headers):
        rec = create(emu, region, body)
        return 201, rec, {"ETag": emu.etag(rec)}

    def patch_check(rec, body):
        if rec["status"] == "deleting":
            raise ApiError(409, "image_status_conflict", "Image %s is deleting and cannot be updated" % rec["id"])
        unknown = sorted(set(body) - set(PATCHABLE))
        if unknown:
            raise _field(unknown[0], "Image fields %s cannot be updated" % ", ".join(unknown), "validation_invalid_field")
        if "name" in body:
            check_name(body["name"])
        _check_dates(emu, rec, body)

    def delete_image(region, params, query, body, headers):
        rec = emu.find("image", region, params["id"])
        emu.check_if_match(rec, headers)
        if rec["status"] == "deleting":
            raise ApiError(409, "image_status_conflict", "Image %s is already deleting" % rec["id"])
        rec.update(status="deleting", status_reasons=[], zones=[], _due=[])
        emu.later(rec, emu.delay, lambda r: (emu.forget(r), drop_file(emu, r["id"])))
        return 202, None

    def buckets_control(params, query, raw):
        """POST /_emulator/image-buckets ``{"bucket", "authorised": false}``: may the image service read that bucket."""
        spec = json.loads(raw or b"{}")
        if not spec.get("bucket"):
            raise ApiError(400, "bad_request", 'the body is {"bucket": name, "authorised": true|false}')
        authorise_bucket(spec["bucket"], bool(spec.get("authorised", True)))
        return 200, {"denied_buckets": sorted(emu.denied_buckets)}

    def quota_control(params, query, raw):
        """POST /_emulator/image-quotas ``{"region", "limit"}`` (limit null: none): images that region may hold."""
        spec = json.loads(raw or b"{}")
        if spec.get("region") not in emu.regions:
            raise ApiError(400, "bad_request", 'the body is {"region": one of %s, "limit": n or null}' % ", ".join(emu.regions))
        emu.image_quotas[spec["region"]] = None if spec.get("limit") is None else int(spec["limit"])
        return 200, {"image_quotas": emu.image_quotas}

    def seed_control(params, query, raw):
        """POST /_emulator/images ``{"region", "name", "operating_system"}``: an available image now (no file)."""
        spec = json.loads(raw or b"{}")
        region = spec.get("region") or emu.regions[0]
        check_name(spec.get("name"))
        rec = new_image(emu, region, spec["name"], vpc_images_os.find(emu, region, {"name": spec.get("operating_system") or "debian-12-amd64"}))
        rec.update(status="available", status_reasons=[], zones=[emu.zone_ref(region, "%s-%d" % (region, n)) for n in (1, 2, 3)],
                   file={"size": 1}, minimum_provisioned_size=10)
        return 201, public(rec)

    emu.route("GET", "/images", list_images)
    emu.route("POST", "/images", create_image)
    emu.route("GET", "/images/{id}", emu.getter("image"))
    emu.route("PATCH", "/images/{id}", emu.updater("image", PATCHABLE, patch_check))
    emu.route("DELETE", "/images/{id}", delete_image)
    emu.route("POST", "/images/{id}/deprecate", lambda region, params, *unused: _retire(emu, region, params["id"], "deprecated"))
    emu.route("POST", "/images/{id}/obsolete", lambda region, params, *unused: _retire(emu, region, params["id"], "obsolete"))
    emu.control("POST", "/image-buckets", buckets_control)
    emu.control("POST", "/images", seed_control)
    emu.control("POST", "/image-quotas", quota_control)


def _when(value, field):
    try:
        return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _field(field, "%s must be an RFC 3339 date and time, not %r" % (field, value), "validation_invalid_format") from None


def _check_dates(emu, rec, body):
    """deprecation_at / obsolescence_at: not in the past, deprecation before obsolescence; the status follows when they come."""
    now = datetime.datetime.now(datetime.timezone.utc)
    dates = {}
    for field in ("deprecation_at", "obsolescence_at"):
        value = body.get(field, rec.get(field))
        if value is not None:
            dates[field] = _when(value, field)
            if field in body and dates[field] < now:
                raise _field(field, "%s must not be in the past" % field)
    if len(dates) == 2 and dates["deprecation_at"] >= dates["obsolescence_at"]:
        raise _field("obsolescence_at", "obsolescence_at must be later than deprecation_at")
    for field, status in (("deprecation_at", "deprecated"), ("obsolescence_at", "obsolete")):
        if field in body and body[field] is not None:
            emu.later(rec, (dates[field] - now).total_seconds(), lambda r, status=status: r["status"] in ("available", "deprecated")
                      and r.update(status=status))
            rec["_due"].sort(key=lambda due: due[0])  # settle() reads the earliest first


def _retire(emu, region, rid, status):
    """POST /images/{id}/deprecate or /obsolete: the status now, its time set to now (202 with the image)."""
    rec = emu.find("image", region, rid)
    field = "deprecation_at" if status == "deprecated" else "obsolescence_at"
    allowed = ("available",) if status == "deprecated" else ("available", "deprecated")
    now = datetime.datetime.now(datetime.timezone.utc)
    future_deprecation = status == "obsolete" and rec.get("deprecation_at") and _when(rec["deprecation_at"], "deprecation_at") > now
    if rec["status"] not in allowed or rec.get(field) or future_deprecation:
        raise ApiError(409, "image_status_conflict", "Image %s is %s%s and cannot become %s"
                       % (rid, rec["status"], " with %s set" % field if rec.get(field) else "", status))
    rec.update({"status": status, field: now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    return 202, rec
