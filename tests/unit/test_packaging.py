"""Packaging: the Galaxy tarball, the execution environment, the action group, the changelog, file sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import ansible
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
EE_FILE = os.path.join(ROOT, "meta", "execution-environment.yml")
NOT_SHIPPED = (".venv", ".demo", ".build", "bench/results", ".pytest_cache", ".git")


def tool(name, *args, cwd=ROOT, check=True):
    result = subprocess.run([os.path.join(BIN, name), *args], cwd=cwd, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, check=False)
    if check:
        assert result.returncode == 0, "%s %s failed:\n%s\n%s" % (name, " ".join(args), result.stdout, result.stderr)
    return result


def requirement_lines(path):
    """The requirement lines of a pip or bindep file, comments and blank lines left out."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.split("#", 1)[0].strip() for line in handle]
    return [line for line in lines if line]


def load_yaml(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("galaxy")
    result = tool("ansible-galaxy", "collection", "build", "--output-path", str(out), ROOT)
    assert "Created collection for vmimage.replication" in result.stdout
    (path,) = list(out.iterdir())
    with tarfile.open(str(path)) as tar:
        return path, tar.getnames()


def test_galaxy_build_ships_the_collection_without_dev_files(tarball):
    path, names = tarball
    assert path.name == "vmimage-replication-%s.tar.gz" % load_yaml("galaxy.yml")["version"]
    leaked = [name for name in names for bad in NOT_SHIPPED if name == bad or name.startswith(bad + "/")]
    assert leaked == []
    assert not [name for name in names if "__pycache__" in name.split("/")]
    for needed in ("MANIFEST.json", "FILES.json", "meta/runtime.yml", "meta/execution-environment.yml",
                   "meta/requirements.txt", "meta/bindep.txt", "requirements.txt", "bindep.txt",
                   "roles/conversion_host/tasks/main.yml", "roles/conversion_host/meta/argument_specs.yml",
                   "playbooks/conversion_host.yml", "changelogs/changelog.yaml", "changelogs/config.yaml"):
        assert needed in names, needed


def test_ee_definition_and_requirements_agree():
    ee = load_yaml("meta", "execution-environment.yml")
    assert ee["version"] == 3
    deps = ee["dependencies"]
    # Relative names, so they resolve both beside this file (ansible-builder build -f meta/...)
    # and at the collection root (ansible-builder introspection of an EE that installs the collection).
    assert deps["python"] == "requirements.txt" and deps["system"] == "bindep.txt"
    for name in ("requirements.txt", "bindep.txt"):
        copy = os.path.join(ROOT, "meta", name)
        assert not os.path.islink(copy), "ansible-builder copies a symlink as a link: keep %s a file" % copy
        assert requirement_lines(copy) == requirement_lines(os.path.join(ROOT, name)), (
            "meta/%s and %s list different requirements: copy the root file's lines into meta/%s" % (name, name, name))
    for line in requirement_lines(os.path.join(ROOT, "requirements.txt")):
        Requirement(line)  # every line is a plain requirement specifier (the role installs them one by one)


def test_ansible_core_pins_admit_the_controller():
    ee = load_yaml("meta", "execution-environment.yml")
    installed = ansible.__version__
    pin = Requirement(ee["dependencies"]["ansible_core"]["package_pip"])
    assert pin.name == "ansible-core" and pin.specifier.contains(installed)
    assert SpecifierSet(load_yaml("meta", "runtime.yml")["requires_ansible"]).contains(installed)


def test_ansible_builder_create_accepts_the_ee_file(tmp_path):
    context = tmp_path / "context"
    tool("ansible-builder", "create", "--file", EE_FILE, "--context", str(context), "--output-filename", "Containerfile")
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    assert 'EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile
    assert "ansible-core>=2.16,<2.20" in containerfile and "ansible-runner" in containerfile
    assert "COPY _build/requirements.txt requirements.txt" in containerfile
    assert "COPY _build/bindep.txt bindep.txt" in containerfile
    assert "--user-pip=requirements.txt --user-bindep=bindep.txt" in containerfile
    built = context / "_build"
    assert not (built / "requirements.txt").is_symlink()
    assert requirement_lines(str(built / "requirements.txt")) == requirement_lines(os.path.join(ROOT, "requirements.txt"))
    assert requirement_lines(str(built / "bindep.txt")) == requirement_lines(os.path.join(ROOT, "bindep.txt"))


def test_ansible_builder_introspection_reads_the_root_files():
    """An EE that installs this collection gets its requirements from the collection root."""
    collections = os.path.join(ROOT, ".build", "pytest-collections")  # made by tests/conftest.py
    result = tool("ansible-builder", "introspect", collections)
    data = yaml.safe_load(result.stdout)
    suffix = "  # from collection vmimage.replication"
    assert data["python"] == [line + suffix for line in requirement_lines(os.path.join(ROOT, "requirements.txt"))]
    assert data["system"] == [line + suffix for line in requirement_lines(os.path.join(ROOT, "bindep.txt"))]


def module_names():
    return sorted(name[:-3] for name in os.listdir(os.path.join(ROOT, "plugins", "modules"))
                  if name.endswith(".py") and not name.startswith("_"))


def test_action_group_cloud_is_exactly_the_modules_that_take_cos():
    modules = module_names()
    assert modules
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "pytest-collections"))
    result = subprocess.run([os.path.join(BIN, "ansible-doc"), "-t", "module", "--json"]
                            + ["vmimage.replication.%s" % name for name in modules],
                            capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    docs = json.loads(result.stdout)
    takes_cos = {name for name in modules if "cos" in (docs["vmimage.replication.%s" % name]["doc"].get("options") or {})}
    assert "cos_upload" in takes_cos
    group = set(load_yaml("meta", "runtime.yml")["action_groups"]["cloud"])
    assert takes_cos - group == set(), "add these modules to action_groups.cloud in meta/runtime.yml"
    assert group - takes_cos == set(), "these action_groups.cloud entries are not modules taking cos"
    # The source-cloud modules (provider local among their choices); snapshot_copy's provider (aws, ibm_vpc) is another seam.
    takes_provider = {name for name in modules
                      if "local" in ((docs["vmimage.replication.%s" % name]["doc"].get("options") or {}).get("provider") or {}).get("choices", [])}
    assert takes_provider == set(load_yaml("meta", "runtime.yml")["action_groups"]["provider"]), "action_groups.provider: the modules taking provider"


def test_changelog_lints():
    tool("antsibull-changelog", "lint")
    tool("antsibull-changelog", "lint-changelog-yaml", os.path.join(ROOT, "changelogs", "changelog.yaml"))
    config = load_yaml("changelogs", "config.yaml")
    assert config["notesdir"] == "fragments" and config["changes_file"] == "changelog.yaml"


def test_plugin_files_are_small():
    too_long = {}
    for folder, _dirs, files in os.walk(os.path.join(ROOT, "plugins")):
        for name in files:
            if name.endswith((".py", ".yml", ".yaml")):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as handle:
                    count = sum(1 for _line in handle)
                if count >= 500:
                    too_long[os.path.relpath(path, ROOT)] = count
    assert too_long == {}, "split these files (limit 500 lines)"


def test_awx_doc_names_the_env_vars_the_cos_option_falls_back_to():
    """docs/awx.md's table and credential injectors use exactly the modules' env fallbacks."""
    import re

    from ansible_collections.vmimage.replication.plugins.module_utils._module import COS_OPTIONS

    fallbacks = {key: spec["fallback"][1] for key, spec in COS_OPTIONS.items() if "fallback" in spec}
    with open(os.path.join(ROOT, "docs", "awx.md"), encoding="utf-8") as handle:
        text = handle.read()
    table = {}
    for key, cell in re.findall(r"^\| `(\w+)` \| (`[A-Z_]+`.*?) \|$", text, flags=re.M):
        table[key] = re.findall(r"`([A-Z_]+)`", cell)
    assert table == fallbacks
    known = {name for names in fallbacks.values() for name in names}
    injected = set(re.findall(r"^\s+([A-Z][A-Z_]+): \"\{\{ \w+ \}\}\"$", text, flags=re.M))
    assert {"COS_HMAC_ACCESS_KEY_ID", "COS_HMAC_SECRET_ACCESS_KEY", "IBMCLOUD_API_KEY"} <= injected <= known
