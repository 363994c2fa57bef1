# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The shapes of IBM's Power Cloud API reference (https://cloud.ibm.com/apidocs/power-cloud) the emulator answers with.

No Python SDK of the Power Cloud API is published on PyPI (``ibm-cloud-power`` does not exist; IBM ships Go and
Ruby clients generated from the same OpenAPI document), so the drift test checks every answer against this
table instead of ``Model.from_dict``. Each model lists the fields the reference marks required, the nested models,
and the enumerations it gives. Written from the reference's model pages (CreateCosImageImportJob, JobReference,
Job, JobOperation, JobStatus, Jobs, Image, ImageReference, Images, ImageSpecifications, StorageAffinity, Error).
"""

from __future__ import annotations

MODELS = {
    # The body of POST /pcloud/v1/cloud-instances/{cloud_instance_id}/cos-images.
    "CreateCosImageImportJob": {
        "required": ["imageName", "bucketName", "imageFilename", "region"],
        "optional": ["accessKey", "secretKey", "bucketAccess", "osType", "storageType", "storagePool", "storageAffinity",
                     "importDetails", "userTags"],
        "enums": {"bucketAccess": ["public", "private"], "osType": ["aix", "ibmi", "rhel", "sles"]},
        "nested": {"storageAffinity": "StorageAffinity"},
    },
    "StorageAffinity": {
        "required": [],
        "optional": ["affinityPolicy", "affinityVolume", "affinityPVMInstance", "antiAffinityVolumes", "antiAffinityPVMInstances"],
        "enums": {"affinityPolicy": ["affinity", "anti-affinity"]},
    },
    # 202 of POST .../cos-images.
    "JobReference": {"required": ["id", "href"], "optional": []},
    # GET .../jobs/{job_id} and GET .../cos-images (the last import job).
    "Job": {
        "required": ["id", "operation", "status"],
        "optional": ["createTimestamp"],
        "nested": {"operation": "JobOperation", "status": "JobStatus"},
    },
    "JobOperation": {"required": ["id", "target", "action"], "optional": []},
    "JobStatus": {
        "required": ["state", "progress"],
        "optional": ["message"],
        "enums": {"state": ["queued", "running", "completed", "failed"]},
    },
    # GET .../jobs: up to the last 5 jobs; filters operation.id / operation.target / operation.action.
    "Jobs": {"required": ["jobs"], "optional": [], "lists": {"jobs": "Job"}},
    # GET .../images/{image_id}.
    "Image": {
        "required": ["imageID", "name", "size", "storageType", "storagePool", "creationDate", "lastUpdateDate", "maxImageVolumeSize"],
        "optional": ["state", "description", "crn", "specifications", "volumes", "servers", "taskref", "userTags"],
        "nested": {"specifications": "ImageSpecifications"},
    },
    # One entry of GET .../images.
    "ImageReference": {
        "required": ["imageID", "name", "state", "description", "storageType", "storagePool", "creationDate", "lastUpdateDate",
                     "specifications", "href"],
        "optional": ["crn"],
        "nested": {"specifications": "ImageSpecifications"},
    },
    "Images": {"required": ["images"], "optional": [], "lists": {"images": "ImageReference"}},
    "ImageSpecifications": {
        "required": [],
        "optional": ["architecture", "containerFormat", "diskFormat", "endianness", "hypervisorType", "imageType", "operatingSystem"],
    },
    # Every 4xx/5xx answer of the API (the reference shows error and description; the service adds code and message).
    "Error": {"required": ["code", "description", "error", "message"], "optional": []},
}

# Statuses the reference lists for the operations the collection uses.
STATUSES = {
    ("POST", "cos-images"): [202, 400, 401, 403, 404, 409, 422, 429, 500],
    ("GET", "jobs/{id}"): [200, 400, 401, 403, 404, 429, 500],
    ("GET", "jobs"): [200, 400, 401, 403, 404, 429, 500],
    ("DELETE", "jobs/{id}"): [200, 400, 401, 403, 404, 409, 429, 500],
    ("GET", "images"): [200, 400, 401, 403, 404, 429, 500],
    ("GET", "images/{id}"): [200, 400, 401, 403, 404, 429, 500],
    ("DELETE", "images/{id}"): [200, 400, 401, 403, 404, 429, 500],
}

JOB_ACTIONS = ["vmCapture", "imageExport", "imageImport", "storage"]
JOB_TARGETS = ["cloudConnection", "pvmInstance", "image", "vpnConnection"]


def problems(model, value, where=None):
    """What in ``value`` breaks the reference's ``model``: missing required fields, unknown fields, values outside an enum."""
    spec = MODELS[model]
    where = where or model
    if not isinstance(value, dict):
        return ["%s: expected an object, got %r" % (where, type(value).__name__)]
    found = []
    known = set(spec["required"]) | set(spec.get("optional", []))
    found += ["%s: required field %s is missing" % (where, k) for k in spec["required"] if value.get(k) is None]
    found += ["%s: field %s is not in the reference" % (where, k) for k in value if k not in known]
    for field, allowed in spec.get("enums", {}).items():
        if value.get(field) is not None and value[field] not in allowed:
            found.append("%s: %s=%r is not one of %s" % (where, field, value[field], ", ".join(allowed)))
    for field, inner in spec.get("nested", {}).items():
        if value.get(field) is not None:
            found += problems(inner, value[field], "%s.%s" % (where, field))
    for field, inner in spec.get("lists", {}).items():
        items = value.get(field)
        if items is not None and not isinstance(items, list):
            found.append("%s: %s is not a list" % (where, field))
            continue
        for index, item in enumerate(items or []):
            found += problems(inner, item, "%s.%s[%d]" % (where, field, index))
    return found
