# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""IBM Cloud VPC through the ibm-vpc SDK: options, connection, errors, tags, paging, waits, the by-id device path.

``VpcV1`` with ibm-cloud-sdk-core's ``IAMAuthenticator``: the token is fetched with the API key and renewed by
the authenticator before it expires, so a wait of hours survives token expiry; ``enable_retries`` retries 429
(honouring Retry-After) and 5xx. Every other failure is an ``ApiException``, turned by ``fail`` into a
ReplicationError that names what to fix and never carries the API key.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, urlparse

from ansible_collections.vmimage.replication.plugins.module_utils import _naming, _provider_options, _wait
from ansible_collections.vmimage.replication.plugins.module_utils._errors import FailedState, MissingDependency, ReplicationError, WaitTimeout

try:
    from ibm_cloud_sdk_core import ApiException
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
    from ibm_vpc import VpcV1
    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported as MissingDependency when an adapter is built
    IMPORT_ERROR = exc
    ApiException = type("ApiException", (Exception,), {})
    IAMAuthenticator = VpcV1 = None

DEFAULT_IAM_URL = _provider_options.DEFAULT_IAM_URL
REGION_URL = "https://%s.iaas.cloud.ibm.com/v1"
GIB = 1024 ** 3

OPTIONS = _provider_options.IBM_VPC
DEFAULTS = {k: v.get("default") for k, v in OPTIONS["ibm_vpc"]["options"].items()}


def settings(params):
    """The ``ibm_vpc`` option dict with its defaults filled in (adapters built outside a module get them too)."""
    given = {k: v for k, v in (params.get("ibm_vpc") or {}).items() if v is not None}
    return dict(DEFAULTS, **given)


def service_url(vpc, region=None):
    """The API of ``region``: ibm_vpc.endpoint for its own region (any region when it holds ``{region}``), else IBM's public URL."""
    region = region or vpc.get("region")
    if vpc.get("endpoint") and "{region}" in vpc["endpoint"]:
        if not region:
            raise ReplicationError("Failed to use IBM Cloud VPC: no region; set ibm_vpc.region (for example us-south)")
        return vpc["endpoint"].replace("{region}", region).rstrip("/")
    if vpc.get("endpoint") and (region is None or region == vpc.get("region")):
        return vpc["endpoint"].rstrip("/")
    if not region:
        raise ReplicationError("Failed to use IBM Cloud VPC: no region; set ibm_vpc.region (for example us-south) or ibm_vpc.endpoint")
    return REGION_URL % region


def connect(vpc, region=None):
    """A ``VpcV1`` for ``region`` (default ibm_vpc.region), retries enabled."""
    if IMPORT_ERROR is not None:
        raise MissingDependency("Failed to use IBM Cloud VPC: the Python library ibm-vpc is not installed on the host that runs the module; "
                                "pip install ibm-vpc", exception=str(IMPORT_ERROR))
    if not vpc.get("api_key"):
        raise ReplicationError("Failed to use IBM Cloud VPC: no API key; set ibm_vpc.api_key or the environment variable IC_API_KEY")
    verify = vpc.get("validate_certs", True)
    auth = IAMAuthenticator(vpc["api_key"], url=vpc.get("iam_url") or DEFAULT_IAM_URL, disable_ssl_verification=not verify)
    service = VpcV1(authenticator=auth)
    service.set_service_url(service_url(vpc, region))
    service.set_disable_ssl_verification(not verify)
    service.enable_retries(max_retries=vpc.get("max_retries", 4), retry_interval=vpc.get("retry_interval", 30.0))
    # The SDK retries every method but PATCH; VPC's PATCH is a JSON merge patch (a rename), safe to repeat after a 429 / 5xx.
    service.retry_config.allowed_methods = frozenset(service.retry_config.allowed_methods) | {"PATCH"}
    return service


# --- errors ---------------------------------------------------------------------------------------------------------------

def _body(exc):
    response = getattr(exc, "http_response", None)
    if response is None:
        return {}, ""
    try:
        body = response.json()
    except ValueError:
        body = {}
    return (body if isinstance(body, dict) else {}), (getattr(response, "url", "") or "")


def explain(exc):
    """``HTTP <status> <code>: <message> (trace <id>)`` from IBM's error shape ``{errors: [{code, message}], trace}``."""
    body, _unused = _body(exc)
    errors = body.get("errors") or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    text = first.get("message") or body.get("errorMessage") or body.get("message") or getattr(exc, "message", None) or str(exc)
    code = first.get("code") or body.get("errorCode") or ""
    trace = body.get("trace")
    return "HTTP %s%s: %s%s" % (getattr(exc, "status_code", "?"), " " + code if code else "", text, " (trace %s)" % trace if trace else "")


def hint(exc, what, bucket=None):
    """What the user can do about ``exc`` while acting on ``what``."""
    body, url = _body(exc)
    status = getattr(exc, "status_code", None)
    text = explain(exc).lower()
    if "/identity/token" in url or status == 401:
        return "no valid IAM token: check ibm_vpc.api_key (and ibm_vpc.iam_url)"
    if "quota" in text or "limit_exceeded" in text or "over_quota" in text:
        return "an account quota is exhausted (%s); delete unused resources or ask IBM Cloud support to raise that quota" % (
            ((body.get("errors") or [{}])[0] or {}).get("code") or "quota")
    if status == 403 and bucket:
        return ("the VPC image service may not read bucket %s: authorise it (IAM service-to-service authorisation from VPC Infrastructure "
                "Services, resource type Image Service for VPC, to Cloud Object Storage, role Reader)" % bucket)
    if status == 403:
        return "the API key's identity lacks the IAM role for this: grant it (VPC Infrastructure Services, Editor or Administrator)"
    if status == 404:
        return "%s does not exist: check its name or id and ibm_vpc.region" % what
    return "fix the cause and run again"


def fail(exc, action, what, secret=None, bucket=None, **details):
    """A ReplicationError for an ApiException or a connection error; the API key is masked if a message ever echoed it."""
    if isinstance(exc, ApiException):
        msg = "Failed to %s: %s; %s" % (action, explain(exc), hint(exc, what, bucket))
        details["code"] = getattr(exc, "status_code", None)
    elif type(exc).__name__ == "RetryError":  # requests: the retries of 429 / 5xx ran out
        status = re.search(r"too many (\d+) error responses", str(exc))
        msg = ("Failed to %s: IBM Cloud VPC kept answering HTTP %s (throttled or unavailable) after every retry; run again later, or raise "
               "ibm_vpc.max_retries / ibm_vpc.retry_interval" % (action, status.group(1) if status else "429/5xx"))
        details["code"] = int(status.group(1)) if status else None
    else:
        msg = "Failed to %s: cannot reach IBM Cloud VPC (%s: %s); check ibm_vpc.region / ibm_vpc.endpoint and the network" % (
            action, type(exc).__name__, exc)
    if secret:
        msg = msg.replace(secret, "********")
    return ReplicationError(msg, **details)


# --- tags, paging, waits, devices -----------------------------------------------------------------------------------------

def tags(**values):
    """user_tags ``key:value`` for the collection's state (values that are None are left out)."""
    out = ["created-by:%s" % _naming.CREATED_BY]
    out += ["%s:%s" % (k.replace("_", "-"), v) for k, v in sorted(values.items()) if v is not None]
    return out


def parse_tags(user_tags):
    """``{key: value}`` from user_tags ``key:value`` (tags without a colon are ignored)."""
    out = {}
    for tag in user_tags or []:
        key, sep, value = str(tag).partition(":")
        if sep:
            out.setdefault(key, value)
    return out


def ours(resource):
    return parse_tags(resource.get("user_tags")).get("created-by") == _naming.CREATED_BY


def pages(method, key, **kwargs):
    """Every item of a paged list call (``limit`` / ``start`` from ``next.href``)."""
    items, start = [], None
    while True:
        result = method(limit=100, start=start, **kwargs).get_result() or {}
        items.extend(result.get(key) or [])
        href = (result.get("next") or {}).get("href")
        start = (parse_qs(urlparse(href).query).get("start") or [None])[0] if href else None
        if not start:
            return items


def iso(value):
    """``YYYY-MM-DDTHH:MM:SSZ`` from the API's RFC 3339 times."""
    return _naming.format_time(value) if value else None


def wait(probe, params, what, failure_states, action):
    """``_wait.wait_until`` bounded by wait_timeout / wait_sleep, its failures as ReplicationErrors naming ``what``."""
    # A module's own wait_sleep first (snapshot_copy's copies take hours: 15 s); the connection's paces the rest.
    sleep = params.get("wait_sleep") or (params.get("ibm_vpc") or {}).get("wait_sleep") or 2.0
    if sleep < 0:
        raise ReplicationError("Failed to %s: wait_sleep is %s; give a number of seconds above 0" % (action, sleep))
    try:
        return _wait.wait_until(probe, params.get("wait_timeout") or 1800, sleep, failure_states=failure_states, what=what)
    except FailedState as exc:
        state = exc.state if isinstance(exc.state, dict) else {"status": exc.state}
        reasons = "; ".join("%s: %s" % (r.get("code"), r.get("message")) for r in state.get("reasons") or []) or "no reason given"
        raise ReplicationError("Failed to %s: %s became %s (%s)" % (action, what, state.get("status"), reasons), state=state) from None
    except WaitTimeout as exc:
        raise ReplicationError("Failed to %s: %s still %s after %ss; raise wait_timeout or look at it in the console"
                               % (action, what, (exc.last_state or {}).get("status"), params.get("wait_timeout")), state=exc.last_state) from None


# The virtio serial of an attached VPC volume, as the guest sees it under /dev/disk/by-id, is the first 20 characters of the
# attachment's ``device.id`` ("a unique identifier for the device which is exposed to the instance operating system",
# present once the attachment is ``attached``); IBM's docs show links such as ``virtio-0736-35db69bb-d09b-4``.
SERIAL_LENGTH = 20
_DEVICE_ID = re.compile(r"^[0-9a-z_-]+$")


def by_id_path(by_id_dir, device_id):
    """``<by_id_dir>/virtio-<first 20 characters of the attachment's device.id>``."""
    if not device_id or not _DEVICE_ID.match(device_id):
        raise ValueError("device id %r of a volume attachment is not an IBM Cloud VPC id" % (device_id,))
    return os.path.join(by_id_dir, "virtio-%s" % device_id[:SERIAL_LENGTH])


class Base:
    """Connection and calls shared by the source verbs and snapshot_copy."""

    def __init__(self, params):
        self.params = params
        self.vpc = settings(params)
        self._services = {}

    def service(self, region=None):
        region = region or self.vpc.get("region")
        if region not in self._services:
            self._services[region] = connect(self.vpc, region)
        return self._services[region]

    def call(self, action, what, method, *args, region=None, bucket=None, **kwargs):
        try:
            return getattr(self.service(region), method)(*args, **kwargs).get_result()
        except (ApiException, OSError) as exc:
            raise fail(exc, action, what, secret=self.vpc.get("api_key"), bucket=bucket) from None

    def pages(self, action, method, key, region=None, **kwargs):
        try:
            return pages(getattr(self.service(region), method), key, **kwargs)
        except (ApiException, OSError) as exc:
            raise fail(exc, action, key, secret=self.vpc.get("api_key")) from None

    def get_or_none(self, method, ident, region=None):
        try:
            return getattr(self.service(region), method)(ident).get_result()
        except ApiException as exc:
            if exc.status_code == 404:
                return None
            raise fail(exc, "read %s" % ident, ident, secret=self.vpc.get("api_key")) from None

    def wait_gone(self, method, ident, what, action, region=None):
        wait(lambda: self._gone(method, ident, region), self.params, what, (), action)

    def _gone(self, method, ident, region):
        found = self.get_or_none(method, ident, region)
        return found is None, {"status": (found or {}).get("status") or (found or {}).get("lifecycle_state") or "deleted"}

    def wait_snapshot(self, snap, action, region=None):
        def probe():
            found = self.call(action, "snapshot %s" % snap["name"], "get_snapshot", snap["id"], region=region)
            state = {"status": found.get("lifecycle_state"), "snapshot": found}
            return state["status"] == "stable", state
        return wait(probe, self.params, "snapshot %s" % snap["name"], ("failed", "deleting", "suspended"), action)["snapshot"]

    @staticmethod
    def public_snapshot(snap):
        t = parse_tags(snap.get("user_tags"))
        return {"name": snap.get("name"), "id": snap.get("id"), "crn": snap.get("crn"), "volume": (snap.get("source_volume") or {}).get("id"),
                "server": t.get("source-server"), "created": iso(snap.get("created_at")), "size": (snap.get("minimum_capacity") or 0) * GIB,
                "format": "raw", "fingerprint": None, "created_by": t.get("created-by"), "status": snap.get("lifecycle_state"),
                "snapshot_time": _naming.format_time(t["snapshot-time"]) if t.get("snapshot-time") else iso(snap.get("created_at")),
                "os": (snap.get("operating_system") or {}).get("name")}

    def snapshots(self, region=None, **filters):
        found = self.pages("list snapshots", "list_snapshots", "snapshots", region=region, **filters)
        return sorted(found, key=lambda s: (s.get("created_at") or "", s.get("name") or ""))

    def find_snapshot(self, ident, action, region=None):
        named = self.snapshots(region=region, name=ident)
        if named:
            return named[0]
        found = self.get_or_none("get_snapshot", ident, region)
        if found is None:
            raise ReplicationError("Failed to %s: no snapshot %s in region %s; check the snapshot's name" % (action, ident, region or self.vpc.get("region")),
                                   name=ident)
        return found
