# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""A Kubernetes API server emulator for what restore.yml applies (kubernetes.core.k8s over the kubernetes client).

From the Kubernetes API reference (https://kubernetes.io/docs/reference/kubernetes-api/): discovery (``/version``,
``/api``, ``/apis``, ``/api/v1``); PersistentVolumes, PersistentVolumeClaims and Namespaces created, read, listed,
replaced, patched (JSON merge, strategic merge - for these kinds the same as JSON merge but for keyed lists, which
their specs do not use -, JSON patch) and deleted; ``metadata.uid`` / ``resourceVersion`` / ``creationTimestamp`` set by
the server, ``resourceVersion`` unchanged by a patch that changes nothing; ``?dryRun=All``; bearer-token
authentication; errors as ``Status`` objects (401, 404, 409 AlreadyExists / Conflict, 415, 422 Invalid). Every object
written is validated against the Kubernetes 1.30 OpenAPI schema (strict); the server's defaults are filled in
(``volumeMode: Filesystem``, a PersistentVolume's ``persistentVolumeReclaimPolicy: Retain``, phase ``Pending`` - no
controller runs to bind or make it ``Available``), and a PersistentVolume's source and ``volumeMode`` (and its
``nodeAffinity`` once set) are immutable after creation, as in a real cluster.

``start(token)`` serves on a free 127.0.0.1 port in a thread of the calling process; ``stop()`` ends it.
"""

from __future__ import annotations

import copy
import datetime
import http.server
import itertools
import json
import re
import threading
import urllib.parse
import uuid

import jsonpatch
import kubernetes_validate

VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "gitTreeState": "clean", "buildDate": "2024-04-17T00:00:00Z",
           "goVersion": "go1.22.2", "compiler": "gc", "platform": "linux/amd64"}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# plural: (kind, singular, namespaced, short names)
RESOURCES = {
    "persistentvolumes": ("PersistentVolume", "persistentvolume", False, ["pv"]),
    "persistentvolumeclaims": ("PersistentVolumeClaim", "persistentvolumeclaim", True, ["pvc"]),
    "namespaces": ("Namespace", "namespace", False, ["ns"]),
}
PATH = re.compile(r"^/api/v1/(?:namespaces/(?P<ns>[^/]+)/(?P<nsplural>persistentvolumeclaims)"
                  r"|(?P<plural>persistentvolumes|namespaces|persistentvolumeclaims))(?:/(?P<name>[^/]+))?$")
PATCHES = ("application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json")
# A PersistentVolume's source (spec.csi, spec.hostPath, ...) cannot change once made: the fields besides it. Of those,
# volumeMode never changes either, nor nodeAffinity once set.
PV_SPEC_FIELDS = {"accessModes", "capacity", "claimRef", "mountOptions", "nodeAffinity", "persistentVolumeReclaimPolicy", "storageClassName",
                  "volumeMode", "volumeAttributesClassName"}
# What the API server fills in when a write leaves it out (SetDefaults_PersistentVolume / _PersistentVolumeClaim).
SPEC_DEFAULTS = {"persistentvolumes": {"persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"},
                 "persistentvolumeclaims": {"volumeMode": "Filesystem"}}


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.details = code, reason, details or {}

    def status(self):
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": str(self), "reason": self.reason,
                "details": self.details, "code": self.code}


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class Cluster:
    """The objects, keyed by (plural, namespace, name); the namespace "default" exists, as in every cluster."""

    def __init__(self, token):
        self.token, self.lock, self.objects, self.versions = token, threading.Lock(), {}, itertools.count(1000)
        self.requests = []
        self._store("namespaces", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})

    def discovery(self, path):
        if path == "/version":
            return VERSION
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        if path == "/api/v1":
            resources = []
            for plural, (kind, singular, namespaced, short) in RESOURCES.items():
                resources.append({"name": plural, "singularName": singular, "namespaced": namespaced, "kind": kind, "verbs": VERBS,
                                  "shortNames": short})
                resources.append({"name": plural + "/status", "singularName": "", "namespaced": namespaced, "kind": kind,
                                  "verbs": ["get", "patch", "update"]})
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}
        return None

    def handle(self, method, path, query, headers, body):
        """(status code, JSON body) of one request."""
        self.requests.append((method, path))
        if headers.get("Authorization") != "Bearer %s" % self.token:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        found = self.discovery(path)
        if found is not None and method == "GET":
            return 200, found
        match = PATH.match(path)
        if not match:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        plural = match.group("plural") or match.group("nsplural")
        namespace = match.group("ns") or ""
        if RESOURCES[plural][2] and not namespace:
            if method == "GET" and not match.group("name"):
                return 200, self._list(plural, None)
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        dry_run = query.get("dryRun") == ["All"]
        with self.lock:
            return self._route(method, plural, namespace, match.group("name"), headers, body, dry_run)

    def _route(self, method, plural, namespace, name, headers, body, dry_run):
        if name is None:
            if method == "GET":
                return 200, self._list(plural, namespace)
            if method == "POST":
                return 201, self._create(plural, namespace, self._json(body), dry_run)
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        current = self._get(plural, namespace, name)
        if method == "GET":
            return 200, current
        if method == "DELETE":
            if not dry_run:
                del self.objects[(plural, namespace, name)]
            return 200, current
        if method == "PUT":
            new = self._json(body)
            sent = (new.get("metadata") or {}).get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been modified; please apply your '
                                                "changes to the latest version and try again" % (plural, name), self._details(plural, name))
        elif method == "PATCH":
            new = self._patched(current, headers.get("Content-Type", ""), body)
        else:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        return 200, self._update(plural, namespace, name, current, new, dry_run)

    # --- objects ------------------------------------------------------------------------------------------------------------
    @staticmethod
    def _json(body):
        try:
            value = json.loads(body or b"null")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format: %s" % exc) from None
        if not isinstance(value, dict):
            raise ApiError(400, "BadRequest", "the body of the request is not an object")
        return value

    @staticmethod
    def _details(plural, name):
        return {"name": name, "kind": plural}

    def _get(self, plural, namespace, name):
        found = self.objects.get((plural, namespace, name))
        if found is None:
            raise ApiError(404, "NotFound", '%s "%s" not found' % (plural, name), self._details(plural, name))
        return copy.deepcopy(found)

    def _list(self, plural, namespace):
        items = [copy.deepcopy(o) for (p, ns, _n), o in sorted(self.objects.items()) if p == plural and namespace in (None, ns)]
        return {"kind": RESOURCES[plural][0] + "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(next(self.versions))},
                "items": items}

    def _check(self, plural, namespace, obj, name=None):
        kind = RESOURCES[plural][0]
        if obj.get("kind") != kind or obj.get("apiVersion") != "v1":
            raise ApiError(400, "BadRequest", "the API version in the data (%s) does not match the expected API version (v1) or kind %s"
                           % (obj.get("apiVersion"), kind))
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            raise ApiError(422, "Invalid", "%s is invalid: metadata.name: Required value: name or generateName is required" % kind)
        if name and meta["name"] != name:
            raise ApiError(400, "BadRequest", "the name of the object (%s) does not match the name on the URL (%s)" % (meta["name"], name))
        if namespace and meta.get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        if namespace and ("namespaces", "", namespace) not in self.objects:
            raise ApiError(404, "NotFound", 'namespaces "%s" not found' % namespace, self._details("namespaces", namespace))
        try:
            kubernetes_validate.validate(obj, VERSION["major"] + "." + VERSION["minor"], strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (kind, meta["name"], exc.message), self._details(plural, meta["name"])) from None

    def _create(self, plural, namespace, obj, dry_run):
        self._check(plural, namespace, obj)
        name = obj["metadata"]["name"]
        if (plural, namespace, name) in self.objects:
            raise ApiError(409, "AlreadyExists", '%s "%s" already exists' % (plural, name), self._details(plural, name))
        obj = copy.deepcopy(obj)
        obj["metadata"] = dict(obj["metadata"], uid=str(uuid.uuid4()),
                               creationTimestamp=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        if namespace:
            obj["metadata"]["namespace"] = namespace
        obj["status"] = {"PersistentVolume": {"phase": "Pending"}, "PersistentVolumeClaim": {"phase": "Pending"},
                         "Namespace": {"phase": "Active"}}[RESOURCES[plural][0]]
        self._default(plural, obj)
        return obj if dry_run else self._store(plural, namespace, obj)

    @staticmethod
    def _default(plural, obj):
        if plural in SPEC_DEFAULTS:
            obj["spec"] = dict(SPEC_DEFAULTS[plural], **(obj.get("spec") or {}))

    def _check_pv_update(self, name, before, after):
        def source(spec):
            return {k: v for k, v in spec.items() if k not in PV_SPEC_FIELDS}
        if source(before) != source(after):
            raise ApiError(422, "Invalid", 'PersistentVolume "%s" is invalid: spec.persistentvolumesource: Forbidden: spec.persistentvolumesource '
                                           "is immutable after creation" % name, self._details("persistentvolumes", name))
        for field in ("volumeMode", "nodeAffinity"):
            if before.get(field) is not None and after.get(field) != before.get(field):
                raise ApiError(422, "Invalid", 'PersistentVolume "%s" is invalid: spec.%s: Invalid value: %s: field is immutable'
                               % (name, field, json.dumps(after.get(field))), self._details("persistentvolumes", name))

    def _store(self, plural, namespace, obj):
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        self.objects[(plural, namespace, obj["metadata"]["name"])] = obj
        return copy.deepcopy(obj)

    @staticmethod
    def _patched(current, content_type, body):
        kind = content_type.split(";")[0].strip()
        if kind not in PATCHES:
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: "
                           + ", ".join(PATCHES))
        try:
            patch = json.loads(body or b"null")
            if kind == "application/json-patch+json":
                return jsonpatch.apply_patch(current, patch)
        except (ValueError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, "Invalid", "the patch cannot be applied: %s" % exc) from None
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "the patch is not an object")
        return merge_patch(current, patch)

    def _update(self, plural, namespace, name, current, new, dry_run):
        new = copy.deepcopy(new)
        # The server owns these: a client cannot change them.
        new["metadata"] = dict(new.get("metadata") or {}, **{k: current["metadata"][k] for k in ("uid", "creationTimestamp")})
        new.setdefault("status", current.get("status"))
        self._default(plural, new)
        self._check(plural, namespace, new, name)
        if plural == "persistentvolumes":
            self._check_pv_update(name, current.get("spec", {}), new.get("spec", {}))
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current or dry_run:
            return new
        return self._store(plural, namespace, new)


class _Handler(http.server.BaseHTTPRequestHandler):
    cluster = None

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass  # quiet: the tests read the cluster's state, not a log

    def _serve(self):
        url = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            code, answer = self.cluster.handle(self.command, url.path, urllib.parse.parse_qs(url.query), self.headers, body)
        except ApiError as exc:
            code, answer = exc.code, exc.status()
        data = json.dumps(answer).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class Server:
    def __init__(self, token):
        self.cluster = Cluster(token)
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def kubeconfig(self, token=None):
        """A kubeconfig (as a dict) for this server, with ``token`` (default: the right one)."""
        return {"apiVersion": "v1", "kind": "Config", "current-context": "emulator",
                "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                "users": [{"name": "restore", "user": {"token": token or self.cluster.token}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "restore"}}]}

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def start(token):
    return Server(token)
