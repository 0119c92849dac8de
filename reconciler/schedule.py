"""Slots of a period: the scheduled instants, in the period's timezone, DST-correct.

Pure: no clock, no I/O. Every datetime in and out is timezone-aware; results are UTC.

Semantics (see DESIGN.md, "profile" and "slot"):

- hourly: every real hour at local minute `minute`, on days matching the day filters. On a fall-back
  day the repeated hour fires twice (25 slots), on a spring-forward day the skipped hour does not
  (23 slots): hourly is about elapsed hours. In :30/:45 offset zones the *local* minute matches.
- daily / weekly / monthly / yearly: once a day at `hour`:`minute` local time on matching days.
  weekly: `days_of_week` (empty means Monday); monthly: `day_of_month` (0 means 1), months matching
  `month` (0 = any); yearly: `month` (0 means 1) / `day_of_month` (0 means 1). A day that does not
  exist in a month (31 in April, 29 in February of a common year) has no slot: it is not moved.
- custom: exactly `at`, one slot ever.
- interval: every `every` of real elapsed time from local midnight, restarting each local day; the
  last slot of a day is the last one before the next local midnight.
- Day filters (`days_of_week` empty = any, `day_of_month` 0 = any, `month` 0 = any) apply to every
  frequency except custom.

DST for once-a-day wall times:
- a wall time that does not exist (spring forward) fires once, shifted forward by the gap length
  (02:30 Europe/Berlin on the last Sunday of March fires at 03:30 CEST). This is what PEP 495's
  fold=0 gives, and it keeps the slot the same elapsed time after midnight as on other days.
- a wall time that exists twice (fall back) fires once, at its first occurrence (fold=0).

Searches walk matching *days* (or months when the day of month is fixed), never minutes, within a
bounded horizon of 400 years (one Gregorian cycle, so a period that can fire at all is found).
"""

from __future__ import annotations

import calendar
import heapq
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from reconciler.domain import Frequency, Period

__all__ = ["can_fire", "count_slots", "latest_slot", "next_slot", "slots"]

_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)
# A slot of local day D is wall(D, t) - utcoffset, t in [0h, 24h). Real offsets lie within -12h..+14h;
# 16h also covers historical local-mean-time offsets. Used to know when a day scan can stop.
_MARGIN = timedelta(hours=16)
# One Gregorian cycle: calendars repeat after 400 years, so no match within it means no match ever.
_HORIZON_DAYS = 146097


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _utc(dt: datetime, what: str) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {dt.isoformat()}")
    return dt.astimezone(UTC)


def _day_start_naive(d: date) -> datetime:
    """Midnight of `d` read as UTC: the anchor the margin bounds are measured from."""
    return datetime.combine(d, time(), tzinfo=UTC)


def _wall(tz: ZoneInfo, d: date, hour: int, minute: int, fold: int = 0) -> datetime:
    """UTC instant of a wall time. fold=0 shifts a gap time forward by the gap and picks the first
    of a repeated time (PEP 495), which is exactly the documented DST behaviour."""
    return datetime(d.year, d.month, d.day, hour, minute, fold=fold, tzinfo=tz).astimezone(UTC)


class _Days:
    """The day filter of a period with the frequency's defaults applied."""

    __slots__ = ("dom", "dows", "months")

    def __init__(self, p: Period) -> None:
        dows = frozenset(p.days_of_week)
        dom = p.day_of_month
        month = p.month
        if p.frequency is Frequency.WEEKLY and not dows:
            dows = frozenset({0})
        elif p.frequency is Frequency.MONTHLY:
            dom = dom or 1
        elif p.frequency is Frequency.YEARLY:
            dom = dom or 1
            month = month or 1
        self.dows: frozenset[int] | None = dows or None
        self.dom = dom
        self.months: frozenset[int] | None = frozenset({month}) if month else None

    def possible(self) -> bool:
        if self.dows is not None and not any(0 <= d <= 6 for d in self.dows):
            return False
        months = self.months if self.months is not None else frozenset(range(1, 13))
        if not any(1 <= m <= 12 for m in months):
            return False
        if self.dom == 0:
            return True
        # February can have 29 days; any weekday filter is met by some year in the 400-year cycle.
        return any(
            1 <= m <= 12 and 1 <= self.dom <= (29 if m == 2 else calendar.monthrange(2001, m)[1])
            for m in months
        )

    def _ok(self, d: date) -> bool:
        return (self.dows is None or d.weekday() in self.dows) and (
            self.months is None or d.month in self.months
        )

    def forward(self, start: date, stop: date) -> Iterator[date]:
        """Matching days in [start, stop], ascending."""
        if self.dom:
            y, m = start.year, start.month
            while (y, m) <= (stop.year, stop.month):
                if (self.months is None or m in self.months) and self.dom <= calendar.monthrange(y, m)[1]:
                    d = date(y, m, self.dom)
                    if start <= d <= stop and self._ok(d):
                        yield d
                y, m = (y + 1, 1) if m == 12 else (y, m + 1)
            return
        d = start
        while d <= stop:
            if self.months is not None and d.month not in self.months:
                # jump to the first day of the next month rather than walking the month
                if d.year == 9999 and d.month == 12:
                    return
                d = date(d.year + 1, 1, 1) if d.month == 12 else date(d.year, d.month + 1, 1)
                continue
            if self.dows is None or d.weekday() in self.dows:
                yield d
            if d == date.max:
                return
            d += _DAY

    def backward(self, start: date, stop: date) -> Iterator[date]:
        """Matching days in [stop, start], descending."""
        if self.dom:
            y, m = start.year, start.month
            while (y, m) >= (stop.year, stop.month):
                if (self.months is None or m in self.months) and self.dom <= calendar.monthrange(y, m)[1]:
                    d = date(y, m, self.dom)
                    if stop <= d <= start and self._ok(d):
                        yield d
                y, m = (y - 1, 12) if m == 1 else (y, m - 1)
            return
        d = start
        while d >= stop:
            if self.months is not None and d.month not in self.months:
                # jump to the last day of the previous month
                if d.year == 1 and d.month == 1:
                    return
                d = date(d.year, d.month, 1) - _DAY
                continue
            if self.dows is None or d.weekday() in self.dows:
                yield d
            if d == date.min:
                return
            d -= _DAY


def _shift(d: date, days: int) -> date:
    try:
        return d + timedelta(days=days)
    except OverflowError:
        return date.max if days > 0 else date.min


def can_fire(period: Period) -> bool:
    """False when the period has no slot ever (e.g. 31 February, weekday 9, no `at`)."""
    f = period.frequency
    if f is Frequency.CUSTOM:
        return period.at is not None
    if f is Frequency.INTERVAL:
        if period.every is None or period.every <= timedelta(0):
            return False
    elif not (0 <= period.minute <= 59):
        return False
    elif f is not Frequency.HOURLY and not (0 <= period.hour <= 23):
        return False
    return _Days(period).possible()


class _DaySlots:
    """Slots of one local day for the repeating frequencies."""

    def __init__(self, p: Period) -> None:
        self.p = p
        self.tz = _zone(p.timezone)
        self.days = _Days(p)
        self._hourly_cache: dict[date, list[datetime]] = {}

    def all(self, d: date) -> Iterator[datetime]:
        p = self.p
        if p.frequency is Frequency.HOURLY:
            yield from self._hourly(d)
        elif p.frequency is Frequency.INTERVAL:
            assert p.every is not None
            start, end = self._day_window(d)
            t = start
            while t < end:
                yield t
                t += p.every
        else:
            yield _wall(self.tz, d, p.hour, p.minute)

    def latest(self, d: date, at: datetime) -> datetime | None:
        """The latest slot of day `d` that is <= at."""
        p = self.p
        if p.frequency is Frequency.INTERVAL:
            assert p.every is not None
            start, end = self._day_window(d)
            if at < start:
                return None
            k = (min(at, end - timedelta(microseconds=1)) - start) // p.every
            return start + k * p.every
        best = None
        for t in self.all(d):
            if t <= at:
                best = t
            else:
                break
        return best

    def earliest(self, d: date, after: datetime) -> datetime | None:
        """The earliest slot of day `d` that is > after."""
        p = self.p
        if p.frequency is Frequency.INTERVAL:
            assert p.every is not None
            start, end = self._day_window(d)
            if after < start:
                return start
            t = start + ((after - start) // p.every + 1) * p.every
            return t if t < end else None
        for t in self.all(d):
            if t > after:
                return t
        return None

    def _day_window(self, d: date) -> tuple[datetime, datetime]:
        # fold=0 midnight: when midnight is in a gap this is the transition instant, the real start
        return _wall(self.tz, d, 0, 0), _wall(self.tz, _shift(d, 1), 0, 0)

    def _hourly(self, d: date) -> list[datetime]:
        """Every real instant of local day `d` whose local minute is `minute`: both folds of each
        wall hour, keeping only wall times that exist (skipped hours vanish, repeated ones twice)."""
        cached = self._hourly_cache.get(d)
        if cached is not None:
            return cached
        if len(self._hourly_cache) >= 512:  # bounded: callers look at a few days at a time
            self._hourly_cache.clear()
        out = self._hourly_cache[d] = self._hourly_uncached(d)
        return out

    def _hourly_uncached(self, d: date) -> list[datetime]:
        tz, minute = self.tz, self.p.minute
        out: list[datetime] = []
        for hour in range(24):
            wall = datetime(d.year, d.month, d.day, hour, minute)
            first = None
            for fold in (0, 1):
                u = wall.replace(fold=fold, tzinfo=tz).astimezone(UTC)
                if u == first or u.astimezone(tz).replace(tzinfo=None) != wall:
                    continue
                first = u
                out.append(u)
        out.sort()
        return out


@lru_cache(maxsize=1024)
def _day_slots(period: Period) -> _DaySlots:
    return _DaySlots(period)


def latest_slot(period: Period, at: datetime) -> datetime | None:
    """The latest slot <= `at` (UTC), or None if there is none within the horizon."""
    at = _utc(at, "at")
    if period.frequency is Frequency.CUSTOM:
        if period.at is None:
            return None
        slot = _utc(period.at, "period.at")
        return slot if slot <= at else None
    if not can_fire(period):
        return None
    ds = _day_slots(period)
    best: datetime | None = None
    try:
        d0 = at.astimezone(ds.tz).date()
        for d in ds.days.backward(_shift(d0, 1), _shift(d0, -_HORIZON_DAYS)):
            # every slot of a day <= d is before midnight(d+1) + margin: once best is past that, stop
            if best is not None and best >= _day_start_naive(d) + _DAY + _MARGIN:
                break
            t = ds.latest(d, at)
            if t is not None and (best is None or t > best):
                best = t
    except OverflowError:  # the edge of the datetime range (year 1 or 9999): nothing beyond it
        pass
    return best


def next_slot(period: Period, after: datetime) -> datetime | None:
    """The earliest slot > `after` (UTC), or None if there is none within the horizon."""
    after = _utc(after, "after")
    if period.frequency is Frequency.CUSTOM:
        if period.at is None:
            return None
        slot = _utc(period.at, "period.at")
        return slot if slot > after else None
    if not can_fire(period):
        return None
    ds = _day_slots(period)
    best: datetime | None = None
    try:
        d0 = after.astimezone(ds.tz).date()
        for d in ds.days.forward(_shift(d0, -1), _shift(d0, _HORIZON_DAYS)):
            # every slot of a day >= d is after midnight(d) - margin: once best is before that, stop
            if best is not None and best <= _day_start_naive(d) - _MARGIN:
                break
            t = ds.earliest(d, after)
            if t is not None and (best is None or t < best):
                best = t
    except OverflowError:  # the edge of the datetime range (year 1 or 9999): nothing beyond it
        pass
    return best


def slots(period: Period, start: datetime, end: datetime) -> Iterator[datetime]:
    """Slots in [start, end), ascending (UTC)."""
    start = _utc(start, "start")
    end = _utc(end, "end")
    if start >= end:
        return
    if period.frequency is Frequency.CUSTOM:
        if period.at is not None and start <= _utc(period.at, "period.at") < end:
            yield _utc(period.at, "period.at")
        return
    if not can_fire(period):
        return
    ds = _day_slots(period)
    first = start.astimezone(ds.tz).date()
    last = min(end.astimezone(ds.tz).date(), _shift(first, _HORIZON_DAYS))
    days = ds.days.forward(_shift(first, -1), _shift(last, 1))
    if period.frequency is Frequency.INTERVAL:
        # interval days are contiguous windows of real time: already in order, stream them
        for d in days:
            for t in ds.all(d):
                if t >= end:
                    return
                if t >= start:
                    yield t
        return
    # Days' slots are almost always in day order; a small heap keeps the output sorted even in a
    # zone that falls back across midnight (a repeated 23:xx after the next day's 00:xx).
    pending: list[datetime] = []
    for d in days:
        bound = _day_start_naive(d) - _MARGIN
        while pending and pending[0] < bound:
            yield heapq.heappop(pending)
        for t in ds.all(d):
            if start <= t < end:
                heapq.heappush(pending, t)
    while pending:
        yield heapq.heappop(pending)


def count_slots(period: Period, start: datetime, end: datetime, *, limit: int) -> int:
    """Number of slots in [start, end), counting at most `limit` (dense schedules stay cheap)."""
    n = 0
    for _ in slots(period, start, end):
        n += 1
        if n >= limit:
            break
    return n
