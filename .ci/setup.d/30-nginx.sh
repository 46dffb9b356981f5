#!/usr/bin/env bash
# Debian's nginx for the reverse-proxy tests (tests/test_deploy_nginx.py), which run it as a
# plain foreground process with a config generated from deploy/nginx/closeguard.conf. The
# system service it comes with is never used by the tests.
set -euo pipefail

if command -v nginx >/dev/null 2>&1; then
  echo "nginx already installed: $(nginx -v 2>&1)"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update
"${sudo_cmd[@]}" apt-get install -y nginx
nginx -v
