#!/usr/bin/env bash
# Autobahn TestSuite sections 1-7 against the echo app under uvicorn's three WebSocket
# implementations, with and without closeguard; fails if any case ends worse with closeguard.
# wstest runs only on Python 2.7: a virtualenv from pyenv's 2.7.18 holds it (about 20 s to
# build once, reused after). The run itself takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."

tool=.venv-autobahn-tool
venv27=.venv-autobahn27
if [ ! -x "$venv27/bin/wstest" ]; then
  python2=$(pyenv root)/versions/2.7.18/bin/python2.7
  [ -x "$python2" ] || { echo "pyenv has no Python 2.7.18 ($python2)" >&2; exit 1; }
  rm -rf "$tool" "$venv27"
  python3 -m venv "$tool"
  "$tool/bin/pip" install -q --disable-pip-version-check 'virtualenv<20.22'
  "$tool/bin/virtualenv" -q -p "$python2" "$venv27"
  # pip on 2.7 warns that autobahntestsuite wants setuptools 44.0.0 (44.1.1 is there): harmless.
  "$venv27/bin/pip" install -q --disable-pip-version-check --no-python-version-warning \
    -r autobahn/requirements-py27.txt
fi
"$venv27/bin/wstest" --help >/dev/null

python autobahn/run.py --wstest "$venv27/bin/wstest" --summary "${AUTOBAHN_SUMMARY:-/tmp/autobahn-summary.md}"
