"""The replicate_server role states each default twice (argument spec for users, defaults
mapping for the tasks); this holds the two together."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "replicate_server"
DEFAULT_RE = re.compile(r"\{\{\s*(replication_\w+)\s*\|\s*default\((.*?)\)\s*\}\}")


def _mapping_defaults():
    opts = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())["replicate_server_opts"]
    found = {}
    for value in opts.values():
        for name, default in DEFAULT_RE.findall(str(value)):
            if "replication_" in default:
                continue  # computed from other options (abandon_after from poll_wait): documented in words, not as a value
            found[name] = yaml.safe_load(default.replace("none", "null")) if default not in ("inventory_hostname",) else default
    return found


def _spec_options():
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    return spec["argument_specs"]["main"]["options"]


def test_every_default_in_the_mapping_is_the_documented_default():
    documented = _spec_options()
    mapping = _mapping_defaults()
    assert mapping, "no defaults parsed from defaults/main.yml"
    mismatched = {
        name: (value, documented[name].get("default"))
        for name, value in mapping.items()
        if name in documented and value != "inventory_hostname" and value != documented[name].get("default")
    }
    assert not mismatched, "defaults/main.yml and meta/argument_specs.yml disagree: %s" % mismatched


def test_every_variable_the_mapping_reads_is_documented():
    opts = (ROLE / "defaults" / "main.yml").read_text()
    used = set(re.findall(r"\b(replication_\w+)\b", opts))
    assert used - set(_spec_options()) == set()


def test_module_defaults_match_the_role(tmp_path):
    """The role passes its own defaults; they should be the modules' defaults, which the bench measures."""
    from ansible_collections.vmimage.replication.plugins.modules import cos_upload, qemu_convert

    mapping = _mapping_defaults()
    assert mapping["replication_coroutines"] == qemu_convert.OPTIONS["coroutines"]["default"]
    assert mapping["replication_part_size_mb"] == cos_upload.OPTIONS["part_size_mb"]["default"]
    assert mapping["replication_concurrency"] == cos_upload.OPTIONS["concurrency"]["default"]
    from ansible_collections.vmimage.replication.plugins.modules import image_upload

    for option in ("part_size_mb", "concurrency", "compression_type", "verify", "threads", "deflate_library"):
        assert mapping["replication_%s" % option] == image_upload.OPTIONS[option]["default"], option
