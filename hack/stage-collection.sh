#!/usr/bin/env bash
# Copies the collection's files (tracked, plus new files not ignored by git) to
# .build/collections/ansible_collections/vmimage/replication, where Ansible and
# ansible-test expect a collection to live.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.build/collections/ansible_collections/vmimage/replication
mkdir -p "$dest"
git ls-files -co --exclude-standard -z | rsync -a --delete --from0 --files-from=- ./ "$dest/"
# --files-from does not delete files that vanished from the list; rebuild when they did.
if [ "$(cd "$dest" && find . -type f -not -path './tests/output/*' | wc -l)" -ne "$(git ls-files -co --exclude-standard | while read -r f; do [ -f "$f" ] && echo; done | wc -l)" ]; then
  rm -rf "$dest" && mkdir -p "$dest"
  git ls-files -co --exclude-standard -z | rsync -a --from0 --files-from=- ./ "$dest/"
fi
