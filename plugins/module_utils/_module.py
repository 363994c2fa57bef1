# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The one wrapper every module of the collection is built on.

It composes AnsibleModule: adds the shared option groups (object storage
credentials, progress file, waits), and gives one path from the collection's
typed errors to ``fail_json``. Secrets are declared ``no_log`` here, once.
"""

from __future__ import annotations

import copy
import importlib
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib
from ansible_collections.vmimage.replication.plugins.module_utils._errors import MissingDependency, ReplicationError

# The adapter registry, imported by name only when a module asks for the "catalog" or "provider" group. Ansible ships a
# module with the module_utils its source names; a module that uses an adapter imports _providers itself, and every
# other module (locks, polls, uploads) is built and shipped without the adapters: at each playbook run, each module type
# is packaged once, and parsing the adapters cost about 0.1 s of CPU per package.
_PROVIDERS = "ansible_collections.vmimage.replication.plugins.module_utils._providers"

COS_OPTIONS = dict(
    endpoint=dict(type="str", required=True, fallback=(env_fallback, ["COS_ENDPOINT", "AWS_ENDPOINT_URL"])),
    region=dict(type="str", fallback=(env_fallback, ["COS_REGION", "AWS_REGION"])),
    # An access key id identifies, it does not authenticate; it may be logged.
    access_key_id=dict(type="str", no_log=False, fallback=(env_fallback, ["COS_HMAC_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"])),
    secret_access_key=dict(type="str", no_log=True, fallback=(env_fallback, ["COS_HMAC_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"])),
    api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["IBMCLOUD_API_KEY", "IC_API_KEY"])),
    service_instance_id=dict(type="str", fallback=(env_fallback, ["COS_SERVICE_INSTANCE_ID"])),
    iam_endpoint=dict(type="str", default="https://iam.cloud.ibm.com/identity/token"),
    validate_certs=dict(type="bool", default=True),
    ca_bundle=dict(type="path"),
    # Credentials sealed by _sealed.seal(), opened in the module process (ReplicationModule) with seal_key.
    sealed=dict(type="str", no_log=True),
    seal_key=dict(type="str", no_log=True),
)

COS_SPEC = dict(
    cos=dict(
        type="dict",
        required=True,
        options=COS_OPTIONS,
        required_together=[("access_key_id", "secret_access_key"), ("sealed", "seal_key")],
        required_one_of=[("access_key_id", "api_key", "sealed")],
        mutually_exclusive=[("access_key_id", "api_key")],
    ),
)

# The server's place in the target image library (doc fragment vmimage.replication.catalog); ``target`` (a choice of
# _providers.TARGETS) and the options of every target adapter are added by argument_spec().
CATALOG_SPEC = dict(
    server=dict(type="str", required=True),
)

PROGRESS_SPEC = dict(progress_file=dict(type="path"))

WAIT_SPEC = dict(
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=1800),
    wait_sleep=dict(type="float", default=2.0),
)

_GROUPS = {"cos": COS_SPEC, "catalog": CATALOG_SPEC, "provider": {}, "progress": PROGRESS_SPEC, "wait": WAIT_SPEC}


def _adapter_group(group):
    """The options of every adapter of the group's registry, and the option that chooses one."""
    providers = importlib.import_module(_PROVIDERS)
    if group == "catalog":
        registry, choice = providers.TARGETS, dict(target=dict(type="str", choices=sorted(providers.TARGETS), default="bucket_catalog"))
    else:
        registry, choice = providers.SOURCES, dict(provider=dict(type="str", choices=sorted(providers.SOURCES), default="local"))
    return dict(providers.provider_options(registry), **choice)


def argument_spec(own, *groups):
    """Return ``own`` merged with the named shared option groups ("cos", "catalog", "provider", "progress", "wait")."""
    spec = {}
    for group in groups:
        if group in ("catalog", "provider"):
            spec.update(_adapter_group(group))
        spec.update(copy.deepcopy(_GROUPS[group]))
    spec.update(own)
    return spec


class ReplicationModule:
    """AnsibleModule plus the collection's error path; check mode is always supported."""

    def __init__(self, own_spec, groups=(), action="complete the task", **kwargs):
        self.action = action  # "convert disk", "take snapshot": the verb of unexpected failure messages
        self.ansible = AnsibleModule(argument_spec=argument_spec(own_spec, *groups), supports_check_mode=True, **kwargs)
        if "cos" in groups:
            self._open_sealed_cos()

    def _open_sealed_cos(self):
        """Open ``cos.sealed`` here, on the host that uses the credentials; its secrets join the values never shown."""
        cos = self.ansible.params.get("cos")
        if not cos or not cos.get("sealed"):
            return
        # Imported only for sealed credentials: the cipher library is not a cost of every module call.
        from ansible_collections.vmimage.replication.plugins.module_utils import _sealed  # pylint: disable=import-outside-toplevel

        try:
            opened = _sealed.open_cos(cos)
        except ReplicationError as exc:  # a changed, cut or foreign blob, or no pycryptodome
            self.ansible.fail_json(msg=exc.msg)
        self.ansible.no_log_values.update(str(opened[name]) for name in ("secret_access_key", "api_key") if opened.get(name))
        self.ansible.params["cos"] = opened

    @property
    def params(self):
        return self.ansible.params

    @property
    def check_mode(self):
        return self.ansible.check_mode

    @property
    def diff_mode(self):
        return self.ansible._diff  # pylint: disable=protected-access

    def require_library(self, name, import_error):
        """Fail the way Ansible users expect when a Python library is missing."""
        if import_error is not None:
            self.ansible.fail_json(msg=missing_required_lib(name), exception=import_error)

    def run(self, action):
        """Call ``action(self)`` and exit with its result dict, or fail with the error's message."""
        try:
            result = action(self)
        except MissingDependency as exc:
            self.ansible.fail_json(msg=exc.msg, **exc.details)
        except ReplicationError as exc:
            self.ansible.fail_json(msg=exc.msg, **exc.details)
        except OSError as exc:
            # A file-system error the utils did not expect: still one clear line, not a traceback.
            what = exc.filename or "a file"
            self.ansible.fail_json(
                msg="Failed to %s: %s on %s; check that the path exists, is writable and has room" % (self.action, exc.strerror or exc, what),
                exception=traceback.format_exc(),
            )
        self.ansible.exit_json(**result)
