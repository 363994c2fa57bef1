# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""AWS EC2 / EBS / KMS / S3 through boto3, with the amazon.aws option conventions.

Options (doc fragment vmimage.replication.aws): ``region``, ``profile``,
``aws_access_key`` / ``aws_secret_key`` / ``session_token`` (secrets no_log) with
the environment fallbacks amazon.aws uses, ``endpoint_url``. Throttling is retried
by botocore's adaptive mode; every other ClientError becomes a ReplicationError
naming the call and the AWS error code, never a key.
"""

from __future__ import annotations

import contextlib
import traceback

from ansible.module_utils.basic import env_fallback
from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _snapshot_copy, _wait
from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError

try:
    import boto3
    import botocore.config
    import botocore.exceptions
    BOTO_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported by require()
    boto3 = botocore = None
    BOTO_IMPORT_ERROR = traceback.format_exc()

AWS_OPTIONS = dict(
    region=dict(type="str", aliases=["aws_region"], fallback=(env_fallback, ["AWS_REGION", "AWS_DEFAULT_REGION"])),
    profile=dict(type="str", aliases=["aws_profile"], fallback=(env_fallback, ["AWS_PROFILE"])),
    # An access key id identifies, it does not authenticate; it may be logged.
    aws_access_key=dict(type="str", aliases=["access_key"], no_log=False,
                        fallback=(env_fallback, ["AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY"])),
    aws_secret_key=dict(type="str", aliases=["secret_key"], no_log=True,
                        fallback=(env_fallback, ["AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY"])),
    session_token=dict(type="str", aliases=["aws_session_token"], no_log=True, fallback=(env_fallback, ["AWS_SESSION_TOKEN"])),
    endpoint_url=dict(type="str", aliases=["aws_endpoint_url"], fallback=(env_fallback, ["AWS_URL", "AWS_ENDPOINT_URL"])),
)
AWS_CONSTRAINTS = dict(required_together=[("aws_access_key", "aws_secret_key")], mutually_exclusive=[("profile", "aws_access_key")])

# Errors that mean "slow down" (botocore retries them too; the copy scheduler also backs off on them).
THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "ResourceLimitExceeded", "SnapshotCreationPerVolumeRateExceeded"}


def require():
    if BOTO_IMPORT_ERROR is not None:
        raise MissingDependency("Failed to load the AWS SDK: the Python libraries boto3 and botocore are required on the host that runs "
                                "the module (pip install boto3)", exception=BOTO_IMPORT_ERROR)


def error_code(exc):
    return exc.response.get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""


def fail(what, exc, hint=""):
    """A ReplicationError for ``what`` ("copy snapshot snap-1 to eu-central-1") from a boto exception."""
    code = error_code(exc)
    text = exc.response.get("Error", {}).get("Message", "") if hasattr(exc, "response") else str(exc)
    return ReplicationError("Failed to %s: %s%s%s" % (what, code + ": " if code else "", text or exc.__class__.__name__, hint), aws_error=code)


@contextlib.contextmanager
def errors(action):
    """Turn a boto error that no verb handled (no credentials, no connection, access denied) into one clear ReplicationError."""
    if botocore is None:  # require() says what is missing
        yield
        return
    try:
        yield
    except botocore.exceptions.NoCredentialsError:
        raise ReplicationError("Failed to %s: no AWS credentials found; give aws_access_key/aws_secret_key or profile, set "
                               "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance or service-account role" % action) from None
    except botocore.exceptions.ClientError as exc:
        raise fail(action, exc) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ReplicationError("Failed to %s: %s; check region and endpoint_url" % (action, exc)) from None


class Session:
    """One boto3 session; ``client(service, region)`` gives a client with bounded, adaptive retries."""

    def __init__(self, params):
        require()
        kwargs = {}
        if params.get("profile"):
            kwargs["profile_name"] = params["profile"]
        if params.get("aws_access_key"):
            kwargs.update(aws_access_key_id=params["aws_access_key"], aws_secret_access_key=params["aws_secret_key"],
                          aws_session_token=params.get("session_token"))
        try:
            self.session = boto3.session.Session(**kwargs)
        except botocore.exceptions.ProfileNotFound as exc:
            raise ReplicationError("Failed to open AWS profile %r: %s; name a profile of ~/.aws/config or give aws_access_key"
                                   % (params["profile"], exc)) from None
        self.endpoint_url = params.get("endpoint_url")
        self.config = botocore.config.Config(retries={"mode": "adaptive", "max_attempts": 10}, connect_timeout=30, read_timeout=120)
        self._clients = {}

    def check_region(self, region, what="region"):
        """``region`` if AWS knows it (botocore's endpoint data, all partitions), else a clear error."""
        if not region:
            raise ReplicationError("Failed to choose the AWS %s: none given; set it (or AWS_REGION)" % what)
        known = set()
        for partition in self.session.get_available_partitions():
            known.update(self.session.get_available_regions("ec2", partition_name=partition))
        if region not in known:
            raise ReplicationError("Failed to use AWS %s %r: no such region; known regions include %s"
                                   % (what, region, ", ".join(sorted(r for r in known if r.startswith(region[:2]))[:8] or sorted(known)[:8])))
        return region

    def client(self, service, region):
        key = (service, region)
        if key not in self._clients:
            self._clients[key] = self.session.client(service, region_name=region, endpoint_url=self.endpoint_url, config=self.config)
        return self._clients[key]


def tags_dict(tags):
    return {tag["Key"]: tag["Value"] for tag in tags or ()}


def tags_list(tags):
    return [{"Key": key, "Value": str(value)} for key, value in sorted(tags.items())]


class EC2:
    """The EBS snapshot verbs of one region."""

    def __init__(self, session, region):
        self.region = region
        self.client = session.client("ec2", region)
        self.session = session

    def snapshots(self, filters=(), snapshot_ids=None):
        """Snapshots owned by this account that match ``filters`` (EC2 filter dicts), every page."""
        if snapshot_ids is not None:
            # A filter, not SnapshotIds: one id that no longer exists must not fail the whole look-up.
            ids = list(snapshot_ids)
            found = []
            for at in range(0, len(ids), 200):
                found.extend(self.snapshots(list(filters) + [{"Name": "snapshot-id", "Values": ids[at:at + 200]}]))
            return found
        found = []
        try:
            for page in self.client.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=list(filters)):
                found.extend(page.get("Snapshots", []))
        except botocore.exceptions.ClientError as exc:
            raise fail("list snapshots in %s" % self.region, exc) from None
        except botocore.exceptions.EndpointConnectionError as exc:
            raise ReplicationError("Failed to list snapshots in %s: %s; check region and endpoint_url" % (self.region, exc)) from None
        return found

    def volumes(self, volume_ids):
        """The volumes of ``volume_ids`` that still exist, by id (deleted ones are left out)."""
        found = {}
        for volume_id in volume_ids:
            try:
                for volume in self.client.describe_volumes(VolumeIds=[volume_id]).get("Volumes", []):
                    found[volume["VolumeId"]] = volume
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) != "InvalidVolume.NotFound":
                    raise fail("describe volume %s in %s" % (volume_id, self.region), exc) from None
        return found

    def copy(self, source_id, source_region, description, tags, kms_key_id=None, encrypted=False):
        """Start a copy of ``source_region``/``source_id`` into this region, tagged as it is made; its new id."""
        kwargs = dict(SourceSnapshotId=source_id, SourceRegion=source_region, Description=description[:255],
                      TagSpecifications=[{"ResourceType": "snapshot", "Tags": tags_list(tags)}])
        if encrypted or kms_key_id:
            kwargs["Encrypted"] = True
        if kms_key_id:
            kwargs["KmsKeyId"] = kms_key_id
        return self.client.copy_snapshot(**kwargs)["SnapshotId"]

    def delete(self, snapshot_id):
        try:
            self.client.delete_snapshot(SnapshotId=snapshot_id)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "InvalidSnapshot.NotFound":
                raise fail("delete snapshot %s in %s" % (snapshot_id, self.region), exc,
                           "; a snapshot in use by an AMI cannot be deleted: deregister the image first") from None

    def check_kms_key(self, key_id):
        """The key's ARN if ``key_id`` names an enabled KMS key of this region, else a clear error."""
        parts = key_id.split(":")
        if key_id.startswith("arn:") and len(parts) > 3 and parts[3] != self.region:
            raise ReplicationError("Failed to use KMS key %s for copies to %s: the key is in region %s; a copy is encrypted with a key of its "
                                   "destination region, give one from %s" % (key_id, self.region, parts[3], self.region))
        try:
            meta = self.session.client("kms", self.region).describe_key(KeyId=key_id)["KeyMetadata"]
        except botocore.exceptions.ClientError as exc:
            raise fail("find KMS key %s in %s" % (key_id, self.region), exc,
                       "; give the id, alias or ARN of a key that exists in the destination region") from None
        if meta.get("KeyState") not in (None, "Enabled"):
            raise ReplicationError("Failed to use KMS key %s in %s: it is %s, not Enabled" % (key_id, self.region, meta["KeyState"]))
        return meta["Arn"]

    def create_volume(self, snapshot_id, zone, tags, volume_type=None, iops=None, size=None, kms_key_id=None):
        kwargs = dict(SnapshotId=snapshot_id, AvailabilityZone=zone, TagSpecifications=[{"ResourceType": "volume", "Tags": tags_list(tags)}])
        if volume_type:
            kwargs["VolumeType"] = volume_type
        if iops and volume_type in ("io1", "io2", "gp3"):
            kwargs["Iops"] = int(iops)
        if size:
            kwargs["Size"] = int(size)
        if kms_key_id:
            kwargs.update(Encrypted=True, KmsKeyId=kms_key_id)
        try:
            return self.client.create_volume(**kwargs)
        except botocore.exceptions.ClientError as exc:
            raise fail("create a volume from %s in %s" % (snapshot_id, zone), exc) from None

    def volume_state(self, volume_id):
        volumes = self.volumes([volume_id])
        return volumes[volume_id]["State"] if volume_id in volumes else "missing"


class CopyBackend:
    """The AWS side of _snapshot_copy: EBS snapshots of ``region`` matched by tags or volume ids, copies in other regions."""

    def __init__(self, params, selector):
        self.session = Session(params)
        self.region = self.session.check_region(params["region"], "source region")
        for region in params["destination_regions"]:
            self.session.check_region(region, "destination region")
        self.params = params
        self.selector = selector
        self.kms = {}
        self.source = EC2(self.session, self.region)

    def check_keys(self):
        """Resolve the KMS key in every destination (a key belongs to one region)."""
        key = self.params.get("kms_key_id")
        if key:
            for region in self.params["destination_regions"]:
                self.kms[region] = EC2(self.session, region).check_kms_key(key)

    def sources(self, snapshot_ids=None, extra=None):
        filters = [{"Name": "status", "Values": ["completed"]}]
        tags = self.params.get("tags") or {}
        filters += [{"Name": "tag:%s" % key, "Values": [str(value)]} for key, value in sorted(tags.items())]
        if self.params.get("volume_ids"):
            filters.append({"Name": "volume-id", "Values": list(self.params["volume_ids"])})
        found = self.source.snapshots(filters, snapshot_ids=snapshot_ids)
        volumes = self.source.volumes(sorted({s["VolumeId"] for s in found if s.get("VolumeId", "vol-ffffffff") != "vol-ffffffff"}))
        return [describe_source(s, volumes.get(s.get("VolumeId")), (extra or {}).get(s["SnapshotId"])) for s in found]

    def copies(self, region):
        found = EC2(self.session, region).snapshots([{"Name": "tag:%s" % _snapshot_copy.CREATED_BY_KEY, "Values": [CREATED_BY]}])
        records = (_snapshot_copy.parse_copy(s["SnapshotId"], region, s["State"], tags_dict(s.get("Tags"))) for s in found)
        return [r for r in records if r is not None]

    def start_copy(self, source, region, tags):
        description = "Copy of %s from %s (%s)" % (source["id"], self.region, CREATED_BY)
        try:
            return EC2(self.session, region).copy(source["id"], self.region, description, tags, kms_key_id=self.kms.get(region),
                                                  encrypted=self.params.get("encrypted"))
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in THROTTLED:
                raise _snapshot_copy.Throttled("Failed to start a copy of %s to %s: %s" % (source["id"], region, error_code(exc))) from None
            raise fail("copy snapshot %s from %s to %s" % (source["id"], self.region, region), exc) from None

    def states(self, region, ids):
        return {s["SnapshotId"]: s["State"] for s in EC2(self.session, region).snapshots(snapshot_ids=ids)}

    def delete(self, region, snapshot_id):
        EC2(self.session, region).delete(snapshot_id)


CREATED_BY = _naming.CREATED_BY


def describe_source(snapshot, volume=None, extra=None):
    """A provider-neutral source record of an EBS snapshot (volume type/IOPS/zone from the volume, or ``extra``)."""
    volume = volume or {}
    extra = extra or {}
    tags = tags_dict(snapshot.get("Tags"))
    tags.update(extra.get("tags") or {})
    return dict(
        id=snapshot["SnapshotId"], volume_id=snapshot.get("VolumeId"), start_time=snapshot["StartTime"],
        size=snapshot.get("VolumeSize"), tags=tags,
        volume_type=extra.get("volume_type") or volume.get("VolumeType"), iops=extra.get("iops") or volume.get("Iops"),
        zone=extra.get("zone") or volume.get("AvailabilityZone"), encrypted=snapshot.get("Encrypted", False),
    )


RESTORED_FROM = _snapshot_copy.PREFIX + "restored-from"
PVC_NAME = "kubernetes.io/created-for/pvc/name"
PVC_NAMESPACE = "kubernetes.io/created-for/pvc/namespace"


def copy_records(session, region, filters=()):
    """The copies the collection made in ``region`` (parse_copy records), oldest origin first."""
    found = EC2(session, region).snapshots([{"Name": "tag:%s" % _snapshot_copy.CREATED_BY_KEY, "Values": [CREATED_BY]}] + list(filters))
    records = (_snapshot_copy.parse_copy(s["SnapshotId"], region, s["State"], tags_dict(s.get("Tags"))) for s in found)
    return sorted((r for r in records if r), key=lambda r: (r["start_time"], r["id"]))


def _wait_state(probe_state, ready, failed, what, params):
    def probe():
        state = probe_state()
        return state in ready, state
    return _wait.wait_until(probe, params["wait_timeout"], sleep=params["wait_sleep"], failure_states=failed, what=what)


def restore(params, check_mode):
    """Restore copy ``snapshot_id`` (in ``snapshot_region``) to a new volume in ``region`` / ``availability_zone``.

    Copies the snapshot back first when it is in another region. A volume restored earlier from the same snapshot in
    the same zone (tag restored-from) is reused, so a re-run changes nothing. Returns (changed, facts).
    """
    session = Session(params)
    region = session.check_region(params["region"], "region")
    where = session.check_region(params.get("snapshot_region") or region, "snapshot region")
    target = EC2(session, region)
    try:
        zones = [z["ZoneName"] for z in target.client.describe_availability_zones()["AvailabilityZones"]]
    except botocore.exceptions.ClientError as exc:
        raise fail("list the availability zones of %s" % region, exc) from None
    if params["availability_zone"] not in zones:
        raise ReplicationError("Failed to restore into zone %s: it is not a zone of %s; choose one of %s"
                               % (params["availability_zone"], region, ", ".join(sorted(zones))))
    found = EC2(session, where).snapshots(snapshot_ids=[params["snapshot_id"]])
    if not found:
        raise ReplicationError("Failed to find snapshot %s in %s: list the replicated snapshots with snapshot_copy_info" % (params["snapshot_id"], where))
    snap = found[0]
    tags = tags_dict(snap.get("Tags"))
    facts = dict(snapshot_id=snap["SnapshotId"], snapshot_region=where, region=region, copied_back=None, volume_id=None, created=False)
    changed = False
    local_id = snap["SnapshotId"]
    if where != region:
        back = target.snapshots([{"Name": "tag:%s" % RESTORED_FROM, "Values": [snap["SnapshotId"]]},
                                 {"Name": "tag:%s" % _snapshot_copy.CREATED_BY_KEY, "Values": [CREATED_BY]}])
        back = [b for b in back if b["State"] != "error"]
        if back:
            local_id = back[0]["SnapshotId"]
        elif check_mode:
            local_id, changed = None, True
        else:
            copy_tags = {k: v for k, v in tags.items() if not k.startswith("aws:")}
            copy_tags[RESTORED_FROM] = snap["SnapshotId"]
            copy_tags[_snapshot_copy.CREATED_BY_KEY] = CREATED_BY
            try:
                local_id = target.copy(snap["SnapshotId"], where, "Restore copy of %s from %s (%s)" % (snap["SnapshotId"], where, CREATED_BY),
                                       copy_tags, kms_key_id=params.get("kms_key_id"))
            except botocore.exceptions.ClientError as exc:
                raise fail("copy snapshot %s from %s back to %s" % (snap["SnapshotId"], where, region), exc) from None
            changed = True
        if local_id and not check_mode:
            _wait_state(lambda: (target.snapshots(snapshot_ids=[local_id]) or [{"State": "missing"}])[0]["State"], ("completed",),
                        ("error", "missing"), "snapshot %s copied back to %s" % (local_id, region), params)
        facts["copied_back"] = local_id
    existing = target.client.describe_volumes(Filters=[
        {"Name": "tag:%s" % RESTORED_FROM, "Values": [snap["SnapshotId"]]},
        {"Name": "availability-zone", "Values": [params["availability_zone"]]}]).get("Volumes", [])
    existing = [v for v in existing if v["State"] in ("creating", "available", "in-use")]
    size = params.get("size") or snap.get("VolumeSize") or int(tags.get(_snapshot_copy.VOLUME_SIZE, "0") or 0)
    facts["size_gib"] = size
    if existing:
        facts["volume_id"] = existing[0]["VolumeId"]
    elif check_mode:
        changed = True
    else:
        volume_tags = {k: v for k, v in tags.items() if k in (PVC_NAME, PVC_NAMESPACE) or k.startswith("velero.io/")}
        volume_tags.update({_snapshot_copy.CREATED_BY_KEY: CREATED_BY, RESTORED_FROM: snap["SnapshotId"]})
        volume = target.create_volume(local_id, params["availability_zone"], volume_tags,
                                      volume_type=params.get("volume_type") or tags.get(_snapshot_copy.VOLUME_TYPE),
                                      iops=params.get("iops") or tags.get(_snapshot_copy.VOLUME_IOPS), size=params.get("size"),
                                      kms_key_id=params.get("kms_key_id"))
        facts.update(volume_id=volume["VolumeId"], created=True)
        changed = True
    if facts["volume_id"] and params["wait"] and not check_mode:
        _wait_state(lambda: target.volume_state(facts["volume_id"]), ("available", "in-use"), ("error", "missing"),
                    "volume %s" % facts["volume_id"], params)
    facts["pvc_name"] = params.get("pvc_name") or tags.get(PVC_NAME)
    facts["pvc_namespace"] = params.get("pvc_namespace") or tags.get(PVC_NAMESPACE)
    return changed, facts
