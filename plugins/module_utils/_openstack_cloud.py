# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""One OpenStack cloud as both openstack adapters reach it: the connection from the ``openstack`` options (clouds.yaml,
as openstack.cloud users know them) and errors that name what to fix, never the auth dict."""

from __future__ import annotations

from ansible_collections.vmimage.replication.plugins.module_utils import _wait
from ansible_collections.vmimage.replication.plugins.module_utils._errors import FailedState, ReplicationError, WaitTimeout

try:
    import openstack
    from openstack import exceptions as os_exceptions
    from keystoneauth1 import exceptions as ks_exceptions
    IMPORT_ERROR = None
except ImportError as exc:  # reported by the adapter that needs it
    openstack = os_exceptions = ks_exceptions = None
    IMPORT_ERROR = exc

SDK_ERRORS = (os_exceptions.SDKException, ks_exceptions.ClientException) if openstack else (Exception,)


def where(options, service):
    return "%s of cloud %s region %s" % (service, options.get("cloud") or "(auth)", options.get("region_name") or "(default)")


def connect(options, kind):
    """An openstacksdk connection; ``kind`` (target / provider) names the option in errors."""
    if openstack is None:
        raise ReplicationError("Failed to use %s openstack: the Python library openstacksdk is not installed (%s); pip install openstacksdk"
                               % (kind, IMPORT_ERROR))
    kwargs = {k: options[k] for k in ("auth", "auth_type", "region_name", "interface") if options.get(k)}
    if options.get("validate_certs") is not None:
        kwargs["verify"] = options["validate_certs"]
    if options.get("ca_cert"):
        kwargs["cacert"] = options["ca_cert"]
    try:
        return openstack.connect(cloud=options.get("cloud"), app_name="vmimage.replication", **kwargs)
    except os_exceptions.ConfigException as exc:
        if "region" in str(exc).lower():
            hint = "fix openstack.region_name (or the regions of the cloud in clouds.yaml)"
        elif options.get("cloud"):
            hint = "add cloud %s to clouds.yaml (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack/) or fix openstack.cloud" % options["cloud"]
        else:
            hint = "set openstack.cloud or openstack.auth"
        raise ReplicationError("Failed to use %s openstack: %s; %s" % (kind, exc, hint), cloud=options.get("cloud")) from None


def fail(action, place, exc, service="Glance", endpoint="image"):
    """A ReplicationError for an openstacksdk / keystoneauth exception, naming what to fix."""
    code = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    if isinstance(exc, (ks_exceptions.Unauthorized, os_exceptions.NotSupported)) or code == 401:
        hint = "check the credentials (openstack.auth or the cloud's auth in clouds.yaml: username, password, project, domain)"
    elif isinstance(exc, (ks_exceptions.EndpointNotFound, ks_exceptions.catalog.EmptyCatalog)):
        hint = "check openstack.region_name and openstack.interface: the catalog has no %s endpoint there" % endpoint
    elif isinstance(exc, ks_exceptions.ConnectFailure):
        hint = "check openstack.auth.auth_url (or the cloud's) and the network"
    elif code == 403:
        hint = "the user may not do this; check its role in the project"
    else:
        hint = "see %s's answer above" % service
    message = getattr(exc, "details", None) or getattr(exc, "message", None) or str(exc)
    return ReplicationError("Failed to %s in %s: %s; %s" % (action, place, message, hint), code=code)


def wait(probe, options, params, what, action, place, failure_states=("error",)):
    """``_wait.wait_until`` bounded by ``openstack.timeout``; a failed state or the timeout fails naming ``what``."""
    try:
        return _wait.wait_until(probe, options.get("timeout") or 1800, options.get("wait_sleep") or params.get("wait_sleep") or 2.0,
                                failure_states=failure_states, what=what)
    except (FailedState, WaitTimeout) as exc:
        raise ReplicationError("Failed to %s in %s: %s; raise openstack.timeout or see the service's log" % (action, place, exc.msg)) from None
