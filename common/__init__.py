"""What every layer of wasup shares and none of them owns: wall-clock time and id formats.

``storage`` may not import ``supervisor`` or ``api``; the shapes both sides must agree on (the
ISO timestamp, the ``msg_`` id) live here, once.
"""
