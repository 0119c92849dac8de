"""The source's end of one Receive stream, as the per-backend senders see it."""

from __future__ import annotations

from typing import Protocol

from ..v1 import replication_pb2 as rpb


class Link(Protocol):
    def send(self, msg: rpb.ReceiveRequest) -> None:
        """Queue a message for the target (blocks while the stream is full; throttled)."""

    def send_raw(self, frame: bytes) -> None:
        """Queue a message already encoded (wire.py's bulk encoders)."""

    def recv(self) -> rpb.ReceiveResponse:
        """The target's next message; raises the target's error when the stream failed."""
