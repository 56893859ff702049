"""The seed formula, restated in Python: what row i must look like on the wire."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

CHANNELS = ("email", "sms", "push", "chat")


def row(i: int) -> dict[str, Any]:
    body = (hashlib.md5(str(i).encode()).hexdigest() * 2)[: 40 + i % 80]
    return {
        "id": i,
        "sender_id": (i * 7919) % 10000,
        "recipient_id": (i * 104729) % 10000,
        "channel": CHANNELS[i % 4],
        "body": body,
        "created_at": (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i)).isoformat(),
        "is_read": i % 3 == 0,
    }
