# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The EBS snapshots of Velero backups, read from Velero's bucket as Velero lays it out (Velero 1.x, object store layout
of pkg/persistence/object_store_layout.go; docs/snapshot-copy.md):

    <prefix>/backups/<backup>/velero-backup.json                  the Backup object (metadata.labels, status.phase)
    <prefix>/backups/<backup>/<backup>-volumesnapshots.json.gz    gzip'd JSON list of volume.Snapshot
        {"spec": {"backupName", "persistentVolumeName", "providerVolumeID", "volumeType", "volumeAZ", "volumeIOPS"},
         "status": {"providerSnapshotID", "phase": "New|Completed|Failed"}}

A schedule's backups are labelled ``velero.io/schedule-name=<schedule>`` (and named ``<schedule>-<YYYYMMDDhhmmss>``).
Only backups in phase Completed, and only snapshots in phase Completed, are taken.
"""

from __future__ import annotations

import gzip
import json

from ansible_collections.vmimage.replication.plugins.module_utils import _aws
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

SCHEDULE_LABEL = "velero.io/schedule-name"


def _root(prefix):
    prefix = (prefix or "").strip("/")
    return (prefix + "/" if prefix else "") + "backups/"


def _get(s3, bucket, key):
    """The object's bytes, or None when it does not exist."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except (_aws.botocore.exceptions.ClientError, _aws.botocore.exceptions.BotoCoreError) as exc:
        code = _aws.error_code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            return None
        if code == "NoSuchBucket":
            raise ReplicationError("Failed to read Velero's bucket %s: it does not exist; give the bucket of the backup storage location"
                                   % bucket) from None
        raise ReplicationError("Failed to read s3://%s/%s: %s" % (bucket, key, code or exc)) from None


def backup_names(s3, bucket, prefix):
    names = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=_root(prefix), Delimiter="/"):
            names.extend(p["Prefix"][len(_root(prefix)):].rstrip("/") for p in page.get("CommonPrefixes", []))
    except (_aws.botocore.exceptions.ClientError, _aws.botocore.exceptions.BotoCoreError) as exc:
        code = _aws.error_code(exc)
        raise ReplicationError("Failed to list Velero backups in s3://%s/%s: %s" % (bucket, _root(prefix), code or exc)) from None
    return names


def read_backup(s3, bucket, prefix, name):
    """(Backup object, list of volume snapshots) of backup ``name``; None when there is no such backup."""
    raw = _get(s3, bucket, "%s%s/velero-backup.json" % (_root(prefix), name))
    if raw is None:
        return None
    key = "%s%s/%s-volumesnapshots.json.gz" % (_root(prefix), name, name)
    packed = _get(s3, bucket, key)
    try:
        backup = json.loads(raw)
        snapshots = json.loads(gzip.decompress(packed)) if packed else []
        if not isinstance(backup, dict) or not isinstance(snapshots or [], list):
            raise ValueError("unexpected JSON types")
    except (ValueError, OSError, EOFError) as exc:
        raise ReplicationError("Failed to read Velero backup %s in s3://%s/%s%s/: %s; the objects are not in Velero 1.x's format "
                               "(velero-backup.json, %s-volumesnapshots.json.gz)" % (name, bucket, _root(prefix), name, exc, name)) from None
    return backup, snapshots or []


def snapshots_of(s3, bucket, prefix="", schedule=None, backup=None):
    """``{snapshot_id: extra}`` of the completed EBS snapshots of a schedule's (or one backup's) completed backups.

    ``extra`` has volume_type, iops, zone and tags naming the backup, schedule and persistent volume.
    """
    where = "s3://%s/%s" % (bucket, _root(prefix))
    if backup:
        found = read_backup(s3, bucket, prefix, backup)
        if found is None:
            raise ReplicationError("Failed to find Velero backup %s: no %s%s/velero-backup.json; check velero.bucket, velero.prefix and the "
                                   "backup name (velero backup get)" % (backup, where, backup))
        backups = [found]
    else:
        backups = []
        for name in backup_names(s3, bucket, prefix):
            if not name.startswith(schedule + "-"):
                continue
            found = read_backup(s3, bucket, prefix, name)
            if found and (found[0].get("metadata", {}).get("labels") or {}).get(SCHEDULE_LABEL) == schedule:
                backups.append(found)
    result = {}
    for obj, snapshots in backups:
        if (obj.get("status") or {}).get("phase") != "Completed":
            continue
        name = obj["metadata"]["name"]
        for item in snapshots:
            spec, status = item.get("spec") or {}, item.get("status") or {}
            snapshot_id = status.get("providerSnapshotID")
            if status.get("phase") != "Completed" or not snapshot_id:
                continue
            tags = {"velero.io/backup": name, "velero.io/pv": spec.get("persistentVolumeName") or ""}
            if schedule:
                tags[SCHEDULE_LABEL] = schedule
            result[snapshot_id] = dict(volume_type=spec.get("volumeType"), iops=spec.get("volumeIOPS"), zone=spec.get("volumeAZ"),
                                       tags={k: v for k, v in tags.items() if v})
    return result


def sources(backend, velero):
    """The source records (backend.sources) of the EBS snapshots of ``velero`` (the module's velero option)."""
    s3 = backend.session.client("s3", velero.get("bucket_region") or backend.region)
    extra = snapshots_of(s3, velero["bucket"], velero.get("prefix"), schedule=velero.get("schedule"), backup=velero.get("backup"))
    if not extra:
        return []
    return backend.sources(snapshot_ids=sorted(extra), extra=extra)
