#!/bin/sh
# Run both benchmarks one after the other (~6 minutes); figures in bench/results/*.json.
set -e
cd "$(dirname "$0")/.."
.venv/bin/python bench/gate.py "$@"
.venv/bin/python bench/records.py
