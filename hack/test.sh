#!/usr/bin/env bash
# The test command: sanity, lint, unit, integration (or the one stage named).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$PWD/.build/collections"
stages=("${@:-sanity lint unit integration}")
# shellcheck disable=SC2206
stages=(${stages[*]})
staged=.build/collections/ansible_collections/vmimage/replication

for stage in "${stages[@]}"; do
  echo "=== $stage"
  case "$stage" in
    sanity)
      (cd "$staged" && "$OLDPWD/.build/venv-sanity/bin/ansible-test" sanity --local --requirements --python 3.11 --color no)
      ;;
    lint)
      (cd "$staged" && ansible-lint --profile production --offline --nocolor)
      ;;
    unit)
      python -m pytest -q -p no:cacheprovider tests/unit
      ;;
    integration)
      python -m pytest -q -p no:cacheprovider tests/integration
      ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
