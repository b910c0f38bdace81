#!/usr/bin/env bash
# The Python venv for the MCP interop tests (interop.py, readme_snippet.py; run by
# tests/e2e/mcp_python.rs): created at ${TETHER_MCP_VENV:-target/mcp-venv} (relative to the repo
# root) with requirements.txt installed. Re-created when requirements.txt or python3 changes (a
# stamp in the venv keeps their hash); otherwise it only checks the stamp and returns.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${TETHER_MCP_VENV:-target/mcp-venv}"
case "$venv" in
    /*) ;;
    *) venv="$root/$venv" ;;
esac
req="$here/requirements.txt"
stamp="$venv/.tether-requirements.sha256"
want="$({ cat "$req"; python3 --version; } | sha256sum | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "mcp interop venv up to date: $venv"
    exit 0
fi

if [ -e "$venv" ]; then
    # Only ever remove what is a venv (it has pyvenv.cfg): TETHER_MCP_VENV may point anywhere.
    if [ ! -f "$venv/pyvenv.cfg" ]; then
        echo "setup.sh: $venv exists and is not a venv; not touching it" >&2
        exit 1
    fi
    echo "mcp interop venv out of date, re-creating: $venv"
    rm -rf -- "$venv"
fi

echo "creating mcp interop venv: $venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q -r "$req"
echo "$want" > "$stamp.tmp"
mv "$stamp.tmp" "$stamp"
echo "mcp interop venv ready: $venv ($("$venv/bin/python" -m pip show mcp | sed -n 's/^Version: /mcp /p'))"
