#!/usr/bin/env bash
# A Python venv for one of the test suites that drive Tether with what its users run (the official
# MCP SDK, Playwright, schemathesis): `tests/pyvenv.sh VENV REQUIREMENTS [MODULE]` creates VENV
# (relative to the repo root unless absolute) with REQUIREMENTS installed, and re-creates it when the
# requirements or python3 change (a stamp in the venv keeps their hash); otherwise it only checks the
# stamp and returns. MODULE, when given, is the package whose version is printed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$1"
req="$2"
module="${3:-}"
case "$venv" in
    /*) ;;
    *) venv="$root/$venv" ;;
esac
stamp="$venv/.tether-requirements.sha256"
want="$({ cat "$req"; python3 --version; } | sha256sum | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "venv up to date: $venv"
    exit 0
fi

if [ -e "$venv" ]; then
    # Only ever remove what is a venv (it has pyvenv.cfg): the path may come from the environment.
    if [ ! -f "$venv/pyvenv.cfg" ]; then
        echo "pyvenv.sh: $venv exists and is not a venv; not touching it" >&2
        exit 1
    fi
    echo "venv out of date, re-creating: $venv"
    rm -rf -- "$venv"
fi

echo "creating venv: $venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q -r "$req"
echo "$want" > "$stamp.tmp"
mv "$stamp.tmp" "$stamp"
if [ -n "$module" ]; then
    echo "venv ready: $venv ($("$venv/bin/python" -m pip show "$module" | sed -n "s/^Version: /$module /p"))"
else
    echo "venv ready: $venv"
fi
