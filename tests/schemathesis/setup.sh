#!/usr/bin/env bash
# The Python venv for the Schemathesis runs against the binary (tests/e2e/openapi.rs):
# ${TETHER_SCHEMATHESIS_VENV:-target/schemathesis-venv}, with requirements.txt installed from PyPI.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../pyvenv.sh" "${TETHER_SCHEMATHESIS_VENV:-target/schemathesis-venv}" "$here/requirements.txt" schemathesis
