#!/usr/bin/env bash
# The Python venv for the MCP interop tests (interop.py, readme_snippet.py, restart.py; run by
# tests/e2e/mcp_python.rs): ${TETHER_MCP_VENV:-target/mcp-venv}, with requirements.txt installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../pyvenv.sh" "${TETHER_MCP_VENV:-target/mcp-venv}" "$here/requirements.txt" mcp
