"""Transitional: `Record` moved to `fleetwire.server.records`, the dispatcher protocol to
`fleetwire.server.dispatch`, the queue to `fleetwire.server.dispatch_queue`.

Kept only because tests/conftest.py (not edited on this branch) still imports `Record`
from here; delete this module once it imports `fleetwire.server.records`.
"""

from fleetwire.server.records import Record

__all__ = ["Record"]
