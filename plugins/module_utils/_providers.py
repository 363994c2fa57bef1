# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The provider seam: one pipeline, one adapter per cloud.

A *source* adapter answers the verbs of the stages before the data path (find the
server and its volumes; snapshot, list, delete, restore; a volume from a snapshot
attached to the conversion host, and its detach). A *target* adapter answers the
verbs of the image library (import an image from an object, list, rename, delete).
Modules validate their options, pick the adapter by name with ``source()`` /
``target()`` and call its verbs; the role runs the same stages for every provider.

Every adapter:
- takes its options from the module's params: the shared ones (``provider`` /
  ``target``, ``server``, wait options) and its own group, declared in
  ``_provider_options.py`` when the adapter imports a cloud SDK (so a module loads
  only the SDK it uses), else in ``OPTIONS`` of its module, and merged by
  ``provider_options()`` below;
- marks what it makes with the collection's state (``_naming.CREATED_BY``, the
  source server, the snapshot time, the image's sha256) as tags or metadata, and
  never deletes what does not carry that mark;
- raises ``_errors.ReplicationError`` with a message that names what to fix, never
  a secret;
- returns plain dicts with the keys documented on each verb, so that modules and
  the role read every provider the same way.

A new provider is a new module ``_<provider>.py`` with a ``Source`` and/or
``Target`` subclass, its option group in ``_provider_options.py`` (``BY_PROVIDER``), registered in ``SOURCES`` / ``TARGETS`` and named
in ``_bundle()``; its options documented in the doc fragments ``provider`` (source
modules) and ``catalog`` (target modules) and added to the ``provider`` / ``target``
choices there; and its peer in tests/unit/providers/conftest.py (``PEERS`` /
``TARGET_PEERS``), so that the contract tests run against its peer or emulator.
The modules and the replicate_server role need no change.
"""

from __future__ import annotations

import copy
import importlib

from ansible_collections.vmimage.replication.plugins.module_utils import _provider_options
from ansible_collections.vmimage.replication.plugins.module_utils._errors import ReplicationError

# provider name -> module under plugins/module_utils that holds its adapter.
SOURCES = {"local": "_local_provider", "ibm_vpc": "_ibm_vpc", "openstack": "_openstack_source"}
TARGETS = {"bucket_catalog": "_bucket_catalog", "ibm_vpc": "_ibm_vpc", "powervs": "_powervs", "openstack": "_openstack"}

_PACKAGE = "ansible_collections.vmimage.replication.plugins.module_utils"


def _bundle():
    """Never called. Ansible ships a module with the module_utils its source imports by name, not those found at run time
    with importlib: naming every adapter here puts them all in the payload of every module that imports this file (every
    module with a source or target option; imports below the top level are optional to Ansible's packager, so an adapter
    not written yet does not break the others)."""
    # pylint: disable=import-outside-toplevel,unused-import
    from ansible_collections.vmimage.replication.plugins.module_utils import _local_provider, _bucket_catalog  # noqa: F401
    from ansible_collections.vmimage.replication.plugins.module_utils import _ibm_vpc  # noqa: F401
    from ansible_collections.vmimage.replication.plugins.module_utils import _powervs  # noqa: F401
    from ansible_collections.vmimage.replication.plugins.module_utils import _openstack  # noqa: F401
    from ansible_collections.vmimage.replication.plugins.module_utils import _openstack_source  # noqa: F401


def _adapter_module(name, registry, kind):
    try:
        module_name = registry[name]
    except KeyError:
        raise ValueError("unknown %s %r; choose one of %s" % (kind, name, ", ".join(sorted(registry)))) from None
    try:
        return importlib.import_module("%s.%s" % (_PACKAGE, module_name))
    except ModuleNotFoundError as exc:
        if exc.name != "%s.%s" % (_PACKAGE, module_name):
            raise
        raise ValueError("%s %r is not installed with this copy of the collection (no module_utils/%s.py)" % (kind, name, module_name)) from None


def provider_options(names):
    """Union of the ``OPTIONS`` of the adapters ``names`` (each option declared once, no_log kept); adapters not installed are skipped."""
    spec = {}
    for name in names:
        options = _provider_options.BY_PROVIDER.get(name)
        if options is None:
            try:
                options = getattr(_adapter_module(name, dict(SOURCES, **TARGETS), "provider"), "OPTIONS", {})
            except ValueError:
                continue
        for key, value in options.items():
            spec.setdefault(key, copy.deepcopy(value))
    return spec


def _build(params, key, registry, kind, cls):
    try:
        module = _adapter_module(params[key], registry, kind)
    except ValueError as exc:
        raise ReplicationError("Failed to use %s %s: %s; set %s to one that is installed" % (kind, params[key], exc, key)) from None
    return getattr(module, cls)(params)


def source(params):
    """The ``Source`` adapter named by ``params['provider']``, built from the module's params."""
    return _build(params, "provider", SOURCES, "provider", "Source")


def target(params):
    """The ``Target`` adapter named by ``params['target']``, built from the module's params."""
    return _build(params, "target", TARGETS, "target", "Target")


class Source:
    """Verbs of a source cloud. Each returns plain dicts; ``check_mode`` changes nothing and answers the same."""

    name = None

    def __init__(self, params):
        self.params = params

    def server_info(self, server):
        """The server: ``{name, id, zone, profile, os, boot_volume: {id, name, size, profile, zone},
        volumes: [...same...], latest_snapshot: snapshot dict or None}``; unknown or ambiguous names fail. A volume may
        carry ``fingerprint`` (else modules ask ``volume_fingerprint``)."""
        raise NotImplementedError

    def volume_fingerprint(self, volume):
        """Identity of the volume's current state, or None when the provider cannot tell (then every run copies)."""
        return None

    def snapshot_create(self, volume, server=None, name=None, check_mode=False):
        """``(snapshot, changed)``; waits until the snapshot is usable. snapshot: ``{name, id, volume, server,
        created (UTC, Z), size, format, fingerprint, path (local only), created_by}``."""
        raise NotImplementedError

    def snapshot_list(self, server=None, volume=None, name=None):
        """Snapshots, oldest first (same dicts as ``snapshot_create``)."""
        raise NotImplementedError

    def snapshot_delete(self, name, check_mode=False):
        """``(snapshot or None, changed)``; a snapshot the collection did not make is refused."""
        raise NotImplementedError

    def snapshot_restore(self, name, volume=None, check_mode=False):
        """``(snapshot, changed)``: the volume rolled back to the snapshot's content."""
        raise NotImplementedError

    def volume_attach(self, snapshot, host, check_mode=False):
        """A volume made from ``snapshot`` (its name or id) attached to conversion host ``host`` (provider's id of it),
        waited until its device exists: ``({volume_id, attachment_id, device, host, snapshot}, changed)``; never a
        guessed device name. Attaching again what is attached already answers the same attachment, unchanged."""
        raise NotImplementedError

    def volume_detach(self, attachment, check_mode=False):
        """Detach and delete what ``volume_attach`` made; ``(attachment, changed)``; nothing left is not an error.
        ``attachment`` is ``volume_attach``'s answer, or only ``{snapshot, host}`` (a run that failed before it had
        one): then the adapter finds what it made from that snapshot for that host by its tags."""
        raise NotImplementedError


class Target:
    """Verbs of an image library. Rotation and retention are decided by ``_catalog.plan_import`` for every target."""

    name = None
    object_is_image = False  # True where the bucket is the library (bucket_catalog): its object is the image itself

    def __init__(self, params):
        self.params = params

    def info(self):
        """``{images: [...], latest: image or None, orphans: [...]}``; image: ``{name, id, key, format, size,
        sha256, snapshot_time, source_fingerprint, status}``."""
        raise NotImplementedError

    def import_image(self, key, sha256=None, snapshot_time=None, source_fingerprint=None, keep_last=7, keep_days=None,
                     check_mode=False, **extra):
        """Import the object at ``key``, rotate ``<server>-latest``, prune past retention:
        ``{changed, image, latest, previous_latest, pruned, images, orphaned}``."""
        raise NotImplementedError

    def remove_image(self, name, force=False, check_mode=False):
        """Remove image ``name``; the latest only with ``force``. Same result keys as ``import_image``."""
        raise NotImplementedError


def check_release(adapter, key):
    """Refuse, before anything is imported, to delete an object that is the image itself (bucket_catalog)."""
    if adapter.object_is_image:
        raise ReplicationError("Failed to import image %s: keep_object=false with target %s would delete the image itself; "
                               "keep_object applies to targets that copy the object into their own library" % (key, adapter.name))


def release_object(adapter, key, check_mode=False):
    """Delete ``key``, the object an image was imported from, once the library holds the image: ``(deleted, warning)``.

    ``deleted`` says whether an object was (in check mode: would be) deleted. A failed delete does not undo the import:
    it comes back as a warning that names the object."""
    # Imported here: the source modules import this seam too, and need no S3 library.
    from ansible_collections.vmimage.replication.plugins.module_utils import _cos  # pylint: disable=import-outside-toplevel

    check_release(adapter, key)
    p = adapter.params
    try:
        with _cos.naming_errors("delete the imported object", p["cos"], p["bucket"], key):
            client = _cos.connect(p["cos"])
            if check_mode:
                return _cos.head(client, p["bucket"], key) is not None, None
            return _cos.delete_object(client, p["bucket"], key), None
    except ReplicationError as exc:
        return False, "%s; the image is imported, delete the object by hand or with playbooks/cleanup.yml" % exc.msg
