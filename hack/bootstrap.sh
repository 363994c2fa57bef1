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
# The Ceph peer of the tests (a one-node cluster for the RBD direct path) and the rbd/ceph commands the snapshot module
# runs with openstack.direct_snapshot: without the recommended extras (daemons' monitoring tools).
CEPH_PACKAGES=(ceph-mon ceph-osd ceph-common python3-rbd python3-rados)
missing=()
for pkg in "${CEPH_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
  echo "Installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

# The three venvs do not depend on each other: they are built at once (downloads and installs overlap), each
# logging to its own file, shown when it fails.
mkdir -p .build
make_venv() {  # make_venv NAME DIR REQUIREMENTS-ARGS...
  local name=$1 dir=$2
  shift 2
  echo "Creating $dir ($name)"
  "$PYTHON" -m venv "$dir" && "$dir/bin/python" -m pip install -q --upgrade pip && "$dir/bin/python" -m pip install -q "$@"
}
pids=() names=()
stamp=.venv/.requirements-stamp
if [ ! -x .venv/bin/python ] || ! cmp -s tests/requirements.txt "$stamp"; then
  (make_venv "pinned Python packages" .venv -r tests/requirements.txt && cp tests/requirements.txt "$stamp") > .build/venv-main.log 2>&1 &
  pids+=($!) names+=(venv-main)
fi
# ansible-test sanity runs from a venv of its own (it installs its pinned linters there).
ANSIBLE_CORE_PIN=$(grep -E '^ansible-core==' tests/requirements.txt)
have=$(.build/venv-sanity/bin/python -c 'import ansible; print(ansible.__version__)' 2>/dev/null || true)
if [ "$have" != "${ANSIBLE_CORE_PIN#ansible-core==}" ]; then
  make_venv "ansible-test" .build/venv-sanity "$ANSIBLE_CORE_PIN" > .build/venv-sanity.log 2>&1 &
  pids+=($!) names+=(venv-sanity)
fi
# The OpenStack test peer (real Keystone + Glance, served by gunicorn) has pins of its own that clash with the
# test venv's, so it lives in a venv of its own; tests skip the OpenStack peer when it is missing.
os_stamp=.build/venv-openstack/.requirements-stamp
if [ ! -x .build/venv-openstack/bin/gunicorn ] || ! cmp -s tests/requirements-openstack.txt "$os_stamp"; then
  (make_venv "Keystone, Glance for the OpenStack peer" .build/venv-openstack -r tests/requirements-openstack.txt \
     && cp tests/requirements-openstack.txt "$os_stamp") > .build/venv-openstack.log 2>&1 &
  pids+=($!) names+=(venv-openstack)
fi
failed=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "Failed to build ${names[$i]}:" >&2
    cat ".build/${names[$i]}.log" >&2
    failed=1
  fi
done
[ "$failed" -eq 0 ] || exit 1

# kubernetes.core, which restore.yml applies its PersistentVolume with, for the tests and ansible-lint: PyPI carries it
# only inside the ansible package, so that one collection is unpacked from its wheel (pinned, and its sha256 checked).
K8S_CORE_FROM=ansible==12.3.0
K8S_CORE_SHA256=cd156f82fa87f7a899212b0efa9f7ca3a24d609212de9f78428a572eb01e5414
k8s_core=.build/collections-extra/ansible_collections/kubernetes/core
if [ "$(cat "$k8s_core/.from" 2>/dev/null)" != "$K8S_CORE_FROM" ]; then
  echo "Unpacking kubernetes.core from $K8S_CORE_FROM"
  rm -rf .build/collections-extra .build/wheel-k8s
  .venv/bin/python -m pip download -q --no-deps "$K8S_CORE_FROM" -d .build/wheel-k8s
  .venv/bin/python - .build/wheel-k8s/*.whl .build/collections-extra "$K8S_CORE_SHA256" <<'EOF_PY'
import hashlib
import sys
import zipfile

with open(sys.argv[1], "rb") as handle:
    digest = hashlib.sha256(handle.read()).hexdigest()
if digest != sys.argv[3]:
    sys.exit("%s has sha256 %s, not the pinned %s" % (sys.argv[1], digest, sys.argv[3]))
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extractall(sys.argv[2], [n for n in wheel.namelist() if n.startswith("ansible_collections/kubernetes/core/")])
EOF_PY
  rm -rf .build/wheel-k8s
  echo "$K8S_CORE_FROM" > "$k8s_core/.from"
fi

# ansible-test fetches a pip bootstrap script from a host outside the package registries: give it the offline stand-in.
pip_version=$(.build/venv-sanity/bin/python -c 'import re, ansible_test._internal.python_requirements as m, inspect; print(re.search(r"pip=.([0-9.]+)", inspect.getsource(m)).group(1))')
mkdir -p ~/.ansible/test/cache
cp hack/get_pip_offline.py ~/.ansible/test/cache/get_pip_"${pip_version//./_}".py

bash hack/stage-collection.sh
