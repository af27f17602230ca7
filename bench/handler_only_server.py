"""server.py with every gate scan taken by GateHandler: the connection adapter (handlers.gatepath)
passes every request to the normal routing, as the tests' `gate_path` fixture does for its
"handler" side. For bench/gate.py's `gate (handler only)` side: the same code, one path."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import server  # noqa: E402
from handlers import gatepath  # noqa: E402

gatepath.Application.start_request = gatepath.Application.route

if __name__ == "__main__":
    sys.exit(server.main())
