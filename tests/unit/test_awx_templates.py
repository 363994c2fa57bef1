# Copyright: vmimage.replication contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""examples/awx/job_templates.yml: every survey and extra variable is an argument of the role entry point its playbook runs."""

from __future__ import annotations

import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _entry_points(playbook):
    """(role, entry point) pairs the playbook runs: roles: entries and include_role/import_role tasks."""
    found = []
    for play in _load(playbook):
        for role in play.get("roles") or []:
            name = role["role"] if isinstance(role, dict) else role
            found.append((name.split(".")[-1], "main"))
        for task in play.get("tasks") or []:
            for action in ("ansible.builtin.include_role", "ansible.builtin.import_role"):
                if action in task:
                    found.append((task[action]["name"].split(".")[-1], task[action].get("tasks_from", "main")))
    return found


TEMPLATES = _load("examples", "awx", "job_templates.yml")["controller_templates"]


@pytest.mark.parametrize("template", TEMPLATES, ids=[t["name"] for t in TEMPLATES])
def test_every_variable_is_an_argument_of_the_role(template):
    assert os.path.exists(os.path.join(ROOT, template["playbook"]))
    points = _entry_points(template["playbook"])
    assert points, "the playbook runs no role"
    options = {}
    for role, entry in points:
        options.update(_load("roles", role, "meta", "argument_specs.yml")["argument_specs"][entry]["options"])
    survey = template["survey_spec"]["spec"] if template.get("survey_enabled") else []
    for question in survey:
        spec = options.get(question["variable"])
        assert spec is not None, "survey variable %s is no argument of %s" % (question["variable"], points)
        if spec.get("choices"):
            assert set(question["choices"]) <= set(spec["choices"]), question["variable"]
        if question["type"] == "integer":
            assert spec["type"] == "int", question["variable"]
    for name in template.get("extra_vars") or {}:
        assert name in options, "extra var %s is no argument of %s" % (name, points)
    wanted = {"powervc_host_image", "powervc_host_bucket", "powervc_host_storage_type", "powervc_host_keep_ova"}
    if template["playbook"].endswith("powervc_import.yml"):
        assert wanted <= {q["variable"] for q in survey}


def test_no_secret_in_a_survey_or_extra_vars():
    for template in TEMPLATES:
        names = [q["variable"] for q in template["survey_spec"]["spec"]] + list(template.get("extra_vars") or {})
        assert not [n for n in names if any(word in n for word in ("secret", "password", "api_key", "sealed"))]
