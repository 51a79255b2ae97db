"""What the projector announces after it acknowledges: one Redis PUBLISH per settled batch.

Read-your-writes (`X-Min-Position`) waits on these announcements instead of polling: an API
process subscribed to a stream's channel recomputes that stream's settled watermark when one
arrives. The message carries nothing; the channel names the stream. The channel keeps the stream
key as its prefix, so a hash-tagged stream (`{orders:events:0}`) and its channel share a slot.
"""

from __future__ import annotations


def applied_channel(stream: str) -> str:
    """The channel announcing that entries of `stream` were acknowledged."""
    return f"{stream}:applied"
