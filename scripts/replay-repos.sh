#!/usr/bin/env bash
# The public repositories `cargo bench --bench replay` replays, as bare clones in
# .test-deps/replay/<name>.git, each checked to hold its pinned commit (the list in
# benches/replay.rs, and sqlite-utils: Python with SQL strings, for benches/learning.rs and
# benches/routing.rs). Cloned from GitHub; REPLAY_MIRROR=DIR takes them from DIR/<owner>+<name>/repo
# instead (a machine that cannot reach GitHub but has copies). Not needed by the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

REPOS=(
  "more-itertools more-itertools/more-itertools 2fe1b2eeb9d75f994113fe3ac76d14b6bcd6fb10"
  "cachetools tkem/cachetools 28d4506f2a49d781ffbcecb095fa7aba5bb80aff"
  "walkdir BurntSushi/walkdir 6fd031c82ba5a4204b4ce6eae73dacb00dc072ec"
  "sqlite-utils simonw/sqlite-utils 56dd09702fdb9e899f577ffd51693c1f2176cb08"
)
mkdir -p .test-deps/replay
for entry in "${REPOS[@]}"; do
  read -r name slug commit <<<"$entry"
  target=".test-deps/replay/$name.git"
  if ! git -C "$target" cat-file -e "$commit^{commit}" 2>/dev/null; then
    rm -rf "$target"
    source="https://github.com/$slug.git"
    if [ -n "${REPLAY_MIRROR:-}" ]; then
      source="$REPLAY_MIRROR/${slug/\//+}/repo"
    fi
    echo "replay-repos: cloning $source"
    git clone --quiet --bare --no-local "$source" "$target"
    git -C "$target" cat-file -e "$commit^{commit}" || { echo "replay-repos: $slug has no commit $commit" >&2; exit 1; }
  fi
  echo "replay-repos: $name at ${commit:0:12}"
done
