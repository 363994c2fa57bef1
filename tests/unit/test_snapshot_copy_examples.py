# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""The Kubernetes CronJob example is valid Kubernetes, and it, the playbook and the module agree on every variable,
the opt-out switch first (one name: SNAPSHOT_COPY_DISABLED)."""

from __future__ import annotations

import os
import re

import kubernetes_validate
import pytest
import yaml

from ansible_collections.vmimage.replication.plugins.module_utils import _k8s_manifests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWITCH = "SNAPSHOT_COPY_DISABLED"


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return handle.read()


def test_cronjob_example_is_valid_kubernetes():
    listing = yaml.safe_load(read("examples", "kubernetes", "cronjob.yml"))
    assert listing["kind"] == "List"
    documents = listing["items"]
    assert [d["kind"] for d in documents] == ["ServiceAccount", "ConfigMap", "CronJob"]
    for document in documents:
        kubernetes_validate.validate(document, "1.30", strict=True)
    job = documents[2]["spec"]
    assert job["concurrencyPolicy"] == "Forbid"
    container = job["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["ansible-playbook", "vmimage.replication.copy_snapshots"]


def test_every_configmap_variable_is_read_by_the_playbook_and_the_switch_is_one_name():
    config = yaml.safe_load(read("examples", "kubernetes", "cronjob.yml"))["items"][1]["data"]
    playbook = read("playbooks", "copy_snapshots.yml")
    read_by_playbook = set(re.findall(r"lookup\('ansible.builtin.env', '([A-Z_]+)'\)", playbook))
    assert set(config) <= read_by_playbook, set(config) - read_by_playbook
    module = read("plugins", "modules", "snapshot_copy.py")
    assert SWITCH in config and SWITCH in read_by_playbook and 'env_fallback, ["%s"]' % SWITCH in module
    everything = playbook + module + read("examples", "kubernetes", "cronjob.yml") + read("docs", "snapshot-copy.md")
    assert not re.search(r"SNAPSHOT_COPY_DISABLE\b|\bDISABLE\b", everything), "the opt-out has one name: %s" % SWITCH


def test_manifest_names_are_checked():
    with pytest.raises(ValueError, match="not a Kubernetes name"):
        _k8s_manifests.persistent_volume_claim("Data_DB", "shop", "pv-1", 1)
    pv = _k8s_manifests.persistent_volume("pv-1", "vol-1", 4, "zone-a", "data", "shop", labels={"app": "db"})
    kubernetes_validate.validate(pv, "1.30", strict=True)
    assert "awsElasticBlockStore" not in str(pv) and pv["spec"]["claimRef"] == {"namespace": "shop", "name": "data"}
