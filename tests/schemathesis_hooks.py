"""Schemathesis hooks for every schemathesis run (``SCHEMATHESIS_HOOKS=schemathesis_hooks``, with
tests/ as the current directory).

JSON Schema counts ``5.0`` as the integer 5, and schemathesis sends such whole floats for
``type: integer`` fields on purpose. wasup's counts take JSON integers only (``5.0`` and ``1e3``
are 400: a client sending them has a float where it means a count, see docs/openapi.yaml), so
bodies with a whole float in a count field are not generated as valid data.
"""

from __future__ import annotations

from typing import Any

import schemathesis

#: The body fields that are counts: PUT /settings/ai's, PUT /settings/sending's ``burst`` and
#: the simulator's ``fail`` ``seconds``.
COUNT_FIELDS = frozenset({"maxTokens", "maxRepliesPerMinute", "historyLimit", "burst", "seconds"})


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    if not isinstance(body, dict):
        return True
    return not any(isinstance(body.get(name), float) for name in COUNT_FIELDS)
