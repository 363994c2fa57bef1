#!/usr/bin/env bash
# Installs what make demo / make test / make bench need on a Debian 12 machine:
# system packages (bindep.txt plus the test peers), a .venv with pinned Python
# packages, and the collection staged under .build/collections.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-utils qemu-block-extra e2fsprogs openssh-server openssh-client rsync make git python3-venv shellcheck libvirt-dev pkg-config)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing system packages: ${missing[*]} (install them with apt-get as root)" >&2
    exit 1
  fi
  echo "Installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.requirements-stamp
if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt "$stamp"; then
  echo "Creating .venv with pinned Python packages"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r tests/requirements.txt
  cp tests/requirements.txt "$stamp"
fi

# ansible-test sanity runs from a venv of its own (it installs its pinned linters
# there); it fetches a pip bootstrap script from a host outside the package
# registries, so give it the offline stand-in.
ANSIBLE_CORE_PIN=$(grep -E '^ansible-core==' tests/requirements.txt)
have=$(.build/venv-sanity/bin/python -c 'import ansible; print(ansible.__version__)' 2>/dev/null || true)
if [ "$have" != "${ANSIBLE_CORE_PIN#ansible-core==}" ]; then
  echo "Creating .build/venv-sanity for ansible-test"
  "$PYTHON" -m venv .build/venv-sanity
  .build/venv-sanity/bin/python -m pip install -q "$ANSIBLE_CORE_PIN"
fi
pip_version=$(.build/venv-sanity/bin/python -c 'import re, ansible_test._internal.python_requirements as m, inspect; print(re.search(r"pip=.([0-9.]+)", inspect.getsource(m)).group(1))')
mkdir -p ~/.ansible/test/cache
cp hack/get_pip_offline.py ~/.ansible/test/cache/get_pip_"${pip_version//./_}".py

# The OpenStack test peer (real Keystone + Glance, served by gunicorn) has pins of its own that clash with the
# test venv's, so it lives in a venv of its own; tests skip the OpenStack peer when it is missing.
os_stamp=.build/venv-openstack/.requirements-stamp
if [ ! -x .build/venv-openstack/bin/gunicorn ] || ! cmp -s tests/requirements-openstack.txt "$os_stamp"; then
  echo "Creating .build/venv-openstack (Keystone, Glance) for the OpenStack peer"
  "$PYTHON" -m venv .build/venv-openstack
  .build/venv-openstack/bin/python -m pip install -q --upgrade pip
  .build/venv-openstack/bin/python -m pip install -q -r tests/requirements-openstack.txt
  cp tests/requirements-openstack.txt "$os_stamp"
fi

bash hack/stage-collection.sh
