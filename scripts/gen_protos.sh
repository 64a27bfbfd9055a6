#!/usr/bin/env bash
# Regenerate server/api (Python stubs) from proto/dsomarket/v1/*.proto.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m server.gen_protos
