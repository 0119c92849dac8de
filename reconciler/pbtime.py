"""Protobuf Timestamp fields <-> aware datetimes: the only conversion the control API's client
needs, kept apart from serde (which pulls in the domain and agent types) so that CLI commands
start without loading them."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from .errors import InvalidArgument


def ts(dt: datetime | None) -> Timestamp | None:
    if dt is None:
        return None
    out = Timestamp()
    out.FromDatetime(dt.astimezone(UTC))
    return out


def from_ts(msg: object, field: str) -> datetime | None:
    """An optional Timestamp field of `msg` as an aware UTC datetime (None when unset)."""
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    value: Timestamp = getattr(msg, field)
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:  # seconds or nanos out of range: a bad request
        raise InvalidArgument(f"{field}: not a valid timestamp ({exc})") from None


def set_ts(msg: object, field: str, dt: datetime | None) -> None:
    if dt is not None:
        getattr(msg, field).CopyFrom(ts(dt))
