#!/usr/bin/env bash
# Regenerate dsomarket/v1 (Python stubs) from proto/dsomarket/v1/*.proto.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m dsomarket.server.gen_protos
