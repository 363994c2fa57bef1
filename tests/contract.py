"""Hold a module's real result against its RETURN documentation (the openstack.cloud habit, stricter).

    from tests.contract import assert_return_contract
    assert_return_contract("qemu_convert", result)

Every key the module returned must be documented, and every key documented as
``returned: always`` must be there. Keys documented with another ``returned``
condition ("when state=present", "success", ...) may be absent; pass
``expect=[...]`` to require some of them for this particular run. Keys Ansible
itself adds (invocation, warnings, the file attributes it adds beside ``dest``
or ``path``) are not the module's contract and are ignored.
"""

from __future__ import annotations

import importlib

import yaml

# Added by AnsibleModule.exit_json/fail_json, not by the module.
ANSIBLE_KEYS = frozenset(("invocation", "warnings", "deprecations", "exception", "failed", "msg", "skipped"))
# Added by AnsibleModule.add_path_info when a result has "path" or "dest" naming a file.
PATH_INFO_KEYS = frozenset(("uid", "gid", "owner", "group", "mode", "state", "size", "secontext", "path"))
# Python types a documented RETURN type admits (None is always admitted: "null when ..." values).
TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,),
         "complex": (dict, list), "raw": (object,)}


def documented_returns(module_name):
    """The parsed RETURN of ``vmimage.replication.<module_name>``: ``{key: spec}``."""
    module = importlib.import_module("ansible_collections.vmimage.replication.plugins.modules.%s" % module_name)
    return yaml.safe_load(module.RETURN) or {}


def _ignored(result, documented):
    ignored = set(ANSIBLE_KEYS)
    if "dest" in result or "path" in result:
        ignored |= PATH_INFO_KEYS
    ignored |= set(k for k in result if k.startswith("_ansible"))
    return ignored - set(documented)


def assert_return_contract(module_name, result, expect=()):
    """Assert that ``result`` has exactly the keys ``module_name``'s RETURN documents (see module docstring)."""
    assert not result.get("failed"), "module %s failed: %s" % (module_name, result.get("msg"))
    documented = documented_returns(module_name)
    ignored = _ignored(result, documented)
    undocumented = sorted(set(result) - set(documented) - ignored)
    required = set(k for k, spec in documented.items() if str((spec or {}).get("returned", "")).strip() == "always")
    required |= set(expect)
    missing = sorted(required - set(result))
    assert not undocumented, "%s returned keys its RETURN does not document: %s" % (module_name, undocumented)
    assert not missing, "%s did not return keys its RETURN promises: %s" % (module_name, missing)
    for key, spec in documented.items():
        assert spec and spec.get("description") and spec.get("returned") and spec.get("type"), \
            "%s RETURN key %s lacks description/returned/type" % (module_name, key)
        value = result.get(key)
        kinds = TYPES.get(spec.get("type"), (object,))
        wrong_bool = isinstance(value, bool) and bool not in kinds and spec.get("type") != "raw"
        assert value is None or (isinstance(value, kinds) and not wrong_bool), \
            "%s returned %s=%r, but RETURN documents type %s" % (module_name, key, value, spec.get("type"))
        assert "sample" in spec or spec.get("type") in ("dict", "list", "complex"), "%s RETURN key %s has no sample" % (module_name, key)
