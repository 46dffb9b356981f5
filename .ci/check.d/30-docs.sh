#!/usr/bin/env bash
# The documentation site: mkdocs build --strict (a broken link, a page missing from the
# navigation, a missing snippet or an unresolved reference fails it), into a temporary folder
# that is removed afterwards; the built site is never committed. Then mypy --strict on the
# examples the pages include (tests/test_docs_examples.py runs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$out"
mypy --strict docs/examples
echo "docs: mkdocs build --strict OK"
