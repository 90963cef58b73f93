#!/bin/bash
# The repository stands alone: fails if a file of the project names a path that
# exists only on one machine or outside the repository, or is a symbolic link
# leading out of it.
#
#   test/standalone_test.sh [REPO]      (REPO defaults to this script's repository)
#
# Files: what git tracks plus new files it does not ignore (`git ls-files
# --cached --others --exclude-standard`); outside a git checkout, every file
# but build*/ and .git/. Text files are searched for:
#   /work/  /check/   absolute paths of the machines the project was built on
#   ../shared, shared/design.md, shared/style.md, shared/anchors
#                     the directory beside the repository it used to lean on
# This script is left out (it names them). Prints each hit as FILE:LINE: TEXT.
set -euo pipefail
repo=$(cd "${1:-$(dirname "$0")/..}" && pwd)
cd "$repo"
self=test/standalone_test.sh
patterns='/work/|/check/|\.\./shared|shared/(design|style)\.md|shared/anchors'

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  list() { git ls-files -z --cached --others --exclude-standard; }
else
  list() { find . -path './.git' -prune -o -path './build*' -prune -o -type f -print0 -o -type l -print0 |
             sed -z 's|^\./||'; }
fi

fail=0
while IFS= read -r -d '' f; do
  [ "$f" = "$self" ] && continue
  if [ -L "$f" ]; then
    target=$(readlink -f -- "$f" || true)
    case "$target" in
      "$repo"/*) ;;
      *) echo "$f: symbolic link out of the repository (-> $(readlink -- "$f"))"; fail=1 ;;
    esac
    continue
  fi
  [ -f "$f" ] || continue  # deleted but still tracked
  if hits=$(grep -nIE -- "$patterns" "$f"); then
    while IFS= read -r h; do echo "$f:$h"; done <<< "$hits"
    fail=1
  fi
done < <(list)

if [ $fail = 1 ]; then
  echo "standalone_test: FAILED: the lines above name paths of one machine or outside the" \
       "repository (use paths relative to the repository, \$TMPDIR, or a documented flag)" >&2
  exit 1
fi
echo "standalone_test: ok ($(list | tr -cd '\0' | wc -c) files)"
