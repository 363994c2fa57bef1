#!/usr/bin/env bash
# Copies the collection's files (tracked, plus new files not ignored by git) to
# .build/collections/ansible_collections/vmimage/replication, where Ansible and
# ansible-test expect a collection to live. The copy gets a git index of its own:
# it sits in an ignored directory of this repository, and ansible-test lists the
# files of a collection through git.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.build/collections/ansible_collections/vmimage/replication
list=$(mktemp)
trap 'rm -f "$list"' EXIT
git ls-files -co --exclude-standard -z > "$list"
mkdir -p "$dest"
rsync -a --from0 --files-from="$list" ./ "$dest/"
# Remove what is no longer part of the collection (tests/output is ansible-test's own).
(cd "$dest" && find . -type f -not -path './.git/*' -not -path './tests/output/*' -print0) |
  while IFS= read -r -d '' f; do
    f=${f#./}
    grep -qzxF -- "$f" "$list" || rm -f "$dest/$f"
  done
if [ ! -d "$dest/.git" ]; then
  git -C "$dest" init -q
fi
git -C "$dest" add -A .
