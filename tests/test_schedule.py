"""Slots of a period: every frequency, DST in both directions, odd offsets, leap days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.domain import Frequency, Period
from reconciler.schedule import can_fire, count_slots, latest_slot, next_slot, slots

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local_day(tz: str, d: date) -> tuple[datetime, datetime]:
    """[start, end) of a local calendar day as UTC instants."""
    z = ZoneInfo(tz)
    start = datetime(d.year, d.month, d.day, tzinfo=z).astimezone(UTC)
    nxt = d + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=z).astimezone(UTC)
    return start, end


def day_slots(p: Period, d: date) -> list[datetime]:
    return list(slots(p, *local_day(p.timezone, d)))


def wall(dt: datetime, tz: str) -> str:
    return dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M%z")


# -- each frequency ----------------------------------------------------------------------------


def test_hourly_fires_every_hour_at_the_minute() -> None:
    p = Period("h", Frequency.HOURLY, minute=15)
    got = list(slots(p, utc(2024, 5, 1), utc(2024, 5, 2)))
    assert got == [utc(2024, 5, 1, h, 15) for h in range(24)]


def test_hourly_day_filter_skips_other_days() -> None:
    p = Period("h", Frequency.HOURLY, days_of_week=frozenset({0}))  # Mondays only
    got = list(slots(p, utc(2024, 5, 5), utc(2024, 5, 8)))  # Sun..Tue
    assert len(got) == 24 and all(t.weekday() == 0 for t in got)
    assert latest_slot(p, utc(2024, 5, 7, 12)) == utc(2024, 5, 6, 23)


def test_daily_at_local_wall_time() -> None:
    p = Period("d", Frequency.DAILY, timezone=BERLIN, hour=2, minute=30)
    got = list(slots(p, utc(2024, 1, 1), utc(2024, 1, 4)))
    assert got == [utc(2024, 1, d, 1, 30) for d in (1, 2, 3)]  # CET is UTC+1
    assert latest_slot(p, utc(2024, 7, 1, 0, 29)) == utc(2024, 6, 30, 0, 30)  # CEST is UTC+2
    assert next_slot(p, utc(2024, 7, 1, 0, 29)) == utc(2024, 7, 1, 0, 30)


def test_weekly_on_given_days_and_monday_by_default() -> None:
    p = Period("w", Frequency.WEEKLY, hour=3, days_of_week=frozenset({2, 4}))  # Wed, Fri
    got = list(slots(p, utc(2024, 5, 1), utc(2024, 5, 15)))
    assert [t.day for t in got] == [1, 3, 8, 10]
    monday = Period("w", Frequency.WEEKLY)
    assert [t.weekday() for t in slots(monday, utc(2024, 5, 1), utc(2024, 6, 1))] == [0] * 4


def test_monthly_day_31_skips_short_months() -> None:
    p = Period("m", Frequency.MONTHLY, day_of_month=31, hour=12)
    got = list(slots(p, utc(2024, 1, 1), utc(2025, 1, 1)))
    assert [t.month for t in got] == [1, 3, 5, 7, 8, 10, 12]
    assert latest_slot(p, utc(2024, 7, 30)) == utc(2024, 5, 31, 12)
    assert next_slot(p, utc(2024, 8, 31, 12)) == utc(2024, 10, 31, 12)


def test_monthly_day_0_means_the_first_and_month_filter() -> None:
    p = Period("m", Frequency.MONTHLY, month=6)
    assert list(slots(p, utc(2023, 1, 1), utc(2025, 1, 1))) == [utc(2023, 6, 1), utc(2024, 6, 1)]


def test_yearly_feb_29_only_in_leap_years() -> None:
    p = Period("y", Frequency.YEARLY, month=2, day_of_month=29, hour=6)
    got = list(slots(p, utc(2023, 1, 1), utc(2033, 1, 1)))
    assert got == [utc(2024, 2, 29, 6), utc(2028, 2, 29, 6), utc(2032, 2, 29, 6)]
    # 2100 is not a leap year: eight years to the next one
    assert next_slot(p, utc(2096, 3, 1)) == utc(2104, 2, 29, 6)
    assert latest_slot(p, utc(2104, 2, 28)) == utc(2096, 2, 29, 6)


def test_yearly_defaults_to_january_first() -> None:
    p = Period("y", Frequency.YEARLY)
    assert latest_slot(p, utc(2024, 6, 1)) == utc(2024, 1, 1)


def test_custom_is_one_shot() -> None:
    at = datetime(2024, 3, 1, 12, tzinfo=ZoneInfo(BERLIN))
    p = Period("c", Frequency.CUSTOM, at=at)
    assert latest_slot(p, utc(2024, 3, 1, 10)) is None
    assert latest_slot(p, utc(2024, 3, 1, 11)) == utc(2024, 3, 1, 11)
    assert latest_slot(p, utc(2030, 1, 1)) == utc(2024, 3, 1, 11)
    assert next_slot(p, utc(2024, 3, 1, 10)) == utc(2024, 3, 1, 11)
    assert next_slot(p, utc(2024, 3, 1, 11)) is None
    assert list(slots(p, utc(2024, 1, 1), utc(2025, 1, 1))) == [utc(2024, 3, 1, 11)]


def test_interval_one_minute_across_midnight() -> None:
    p = Period("i", Frequency.INTERVAL, timezone=BERLIN, every=timedelta(minutes=1))
    # local 23:58 .. 00:02 in winter (UTC+1)
    got = list(slots(p, utc(2024, 1, 1, 22, 58), utc(2024, 1, 1, 23, 2)))
    assert got == [utc(2024, 1, 1, 22, m) for m in (58, 59)] + [utc(2024, 1, 1, 23, m) for m in (0, 1)]
    assert len(day_slots(p, date(2024, 1, 2))) == 1440


def test_interval_seven_minutes_restarts_at_midnight() -> None:
    p = Period("i", Frequency.INTERVAL, timezone=BERLIN, every=timedelta(minutes=7))
    # 1440 = 205 * 7 + 5: the last slot of the day is 23:55, then midnight
    day = day_slots(p, date(2024, 1, 2))
    assert len(day) == 206
    assert wall(day[-1], BERLIN) == "2024-01-02 23:55+0100"
    midnight = utc(2024, 1, 2, 23)  # local midnight of Jan 3
    assert latest_slot(p, midnight - timedelta(seconds=1)) == day[-1]
    assert next_slot(p, day[-1]) == midnight
    assert latest_slot(p, midnight) == midnight
    assert next_slot(p, midnight) == midnight + timedelta(minutes=7)
    got = list(slots(p, day[-2], midnight + timedelta(minutes=8)))
    assert got == [day[-2], day[-1], midnight, midnight + timedelta(minutes=7)]


def test_interval_counts_real_time_on_dst_days() -> None:
    p = Period("i", Frequency.INTERVAL, timezone=BERLIN, every=timedelta(hours=1))
    assert len(day_slots(p, date(2024, 3, 31))) == 23
    assert len(day_slots(p, date(2024, 10, 27))) == 25
    seven = Period("i", Frequency.INTERVAL, timezone=BERLIN, every=timedelta(minutes=7))
    assert len(day_slots(seven, date(2024, 3, 31))) == 198  # 23 h = 1380 min: 0, 7, .., 1379


# -- DST -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "spring", "fall"),
    [(BERLIN, date(2024, 3, 31), date(2024, 10, 27)), (NEW_YORK, date(2024, 3, 10), date(2024, 11, 3))],
)
def test_hourly_counts_real_hours_on_dst_days(tz: str, spring: date, fall: date) -> None:
    p = Period("h", Frequency.HOURLY, timezone=tz, minute=30)
    assert len(day_slots(p, spring)) == 23
    assert len(day_slots(p, spring - timedelta(days=7))) == 24
    fall_back = day_slots(p, fall)
    assert len(fall_back) == 25
    # every slot is a real hour after the previous one, including the repeated hour
    assert all(b - a == timedelta(hours=1) for a, b in zip(fall_back, fall_back[1:], strict=False))
    assert all(t.astimezone(ZoneInfo(tz)).minute == 30 for t in fall_back)


def test_daily_spring_forward_shifts_by_the_gap_berlin() -> None:
    p = Period("d", Frequency.DAILY, timezone=BERLIN, hour=2, minute=30)
    (slot,) = day_slots(p, date(2024, 3, 31))
    assert wall(slot, BERLIN) == "2024-03-31 03:30+0200"
    assert slot == utc(2024, 3, 31, 1, 30)


def test_daily_fall_back_fires_once_at_first_occurrence_berlin() -> None:
    p = Period("d", Frequency.DAILY, timezone=BERLIN, hour=2, minute=30)
    assert day_slots(p, date(2024, 10, 27)) == [utc(2024, 10, 27, 0, 30)]  # 02:30 CEST, not CET
    assert wall(utc(2024, 10, 27, 0, 30), BERLIN) == "2024-10-27 02:30+0200"
    # an instant inside the repeated hour sees that one slot, no second one
    assert latest_slot(p, utc(2024, 10, 27, 1, 45)) == utc(2024, 10, 27, 0, 30)
    assert next_slot(p, utc(2024, 10, 27, 0, 30)) == utc(2024, 10, 28, 1, 30)


def test_daily_dst_new_york() -> None:
    spring = Period("d", Frequency.DAILY, timezone=NEW_YORK, hour=2, minute=30)
    assert [wall(t, NEW_YORK) for t in day_slots(spring, date(2024, 3, 10))] == ["2024-03-10 03:30-0400"]
    assert [wall(t, NEW_YORK) for t in day_slots(spring, date(2024, 11, 3))] == ["2024-11-03 02:30-0500"]
    repeated = Period("d", Frequency.DAILY, timezone=NEW_YORK, hour=1, minute=30)
    assert [wall(t, NEW_YORK) for t in day_slots(repeated, date(2024, 11, 3))] == ["2024-11-03 01:30-0400"]


@pytest.mark.parametrize(("tz", "utc_minute"), [("Asia/Kolkata", 30), ("Asia/Kathmandu", 15)])
def test_hourly_in_half_and_quarter_hour_zones(tz: str, utc_minute: int) -> None:
    p = Period("h", Frequency.HOURLY, timezone=tz, minute=0)
    got = day_slots(p, date(2024, 5, 1))
    assert len(got) == 24
    assert all(t.minute == utc_minute for t in got)
    assert all(t.astimezone(ZoneInfo(tz)).minute == 0 for t in got)
    assert latest_slot(p, utc(2024, 5, 1, 12, utc_minute - 1)) == utc(2024, 5, 1, 11, utc_minute)


# -- can_fire, inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        (Period("p", Frequency.YEARLY, month=2, day_of_month=29), True),
        (Period("p", Frequency.YEARLY, month=2, day_of_month=30), False),
        (Period("p", Frequency.MONTHLY, month=4, day_of_month=31), False),
        (Period("p", Frequency.MONTHLY, day_of_month=31), True),
        (Period("p", Frequency.WEEKLY, days_of_week=frozenset({9})), False),
        (Period("p", Frequency.DAILY, hour=24), False),
        (Period("p", Frequency.HOURLY, minute=60), False),
        (Period("p", Frequency.CUSTOM), False),
        (Period("p", Frequency.CUSTOM, at=utc(2024, 1, 1)), True),
        (Period("p", Frequency.INTERVAL, every=timedelta(0)), False),
        (Period("p", Frequency.INTERVAL), False),
        (Period("p", Frequency.INTERVAL, every=timedelta(minutes=5)), True),
        (Period("p", Frequency.DAILY, days_of_week=frozenset({4}), day_of_month=13), True),
    ],
)
def test_can_fire(period: Period, expected: bool) -> None:
    assert can_fire(period) is expected
    if not expected:
        assert latest_slot(period, utc(2024, 1, 1)) is None
        assert next_slot(period, utc(2024, 1, 1)) is None


def test_friday_13th_is_found_far_back() -> None:
    p = Period("p", Frequency.DAILY, days_of_week=frozenset({4}), day_of_month=13)
    assert latest_slot(p, utc(2024, 12, 31)) == utc(2024, 12, 13)
    assert next_slot(p, utc(2024, 12, 31)) == utc(2025, 6, 13)


def test_naive_datetimes_are_refused() -> None:
    p = Period("h", Frequency.HOURLY)
    with pytest.raises(ValueError, match="timezone-aware"):
        latest_slot(p, datetime(2024, 1, 1))


def test_results_are_utc_whatever_the_input_zone() -> None:
    p = Period("h", Frequency.HOURLY, timezone=BERLIN)
    at = datetime(2024, 5, 1, 12, 10, tzinfo=ZoneInfo("Asia/Tokyo"))
    got = latest_slot(p, at)
    assert got == utc(2024, 5, 1, 3) and got is not None and got.tzinfo is UTC


def test_count_slots_stops_at_the_limit() -> None:
    p = Period("i", Frequency.INTERVAL, every=timedelta(seconds=1))
    assert count_slots(p, utc(2024, 1, 1), utc(2025, 1, 1), limit=1000) == 1000
    assert count_slots(p, utc(2024, 1, 1), utc(2024, 1, 1, 0, 1), limit=1000) == 60


def test_dense_interval_latest_and_next_are_arithmetic() -> None:
    # a one-second interval a year away must not be walked second by second
    p = Period("i", Frequency.INTERVAL, timezone=BERLIN, every=timedelta(seconds=1))
    at = utc(2024, 6, 1, 12, 0, 0) + timedelta(microseconds=500)
    assert latest_slot(p, at) == utc(2024, 6, 1, 12)
    assert next_slot(p, at) == utc(2024, 6, 1, 12, 0, 1)


# -- properties: latest/next agree with each other and with a brute-force reference ------------

ZONES = ["UTC", BERLIN, NEW_YORK, "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe", "America/Santiago"]


@st.composite
def periods(draw: st.DrawFn) -> Period:
    freq = draw(st.sampled_from([f for f in Frequency if f is not Frequency.CUSTOM]))
    return Period(
        "p",
        freq,
        timezone=draw(st.sampled_from(ZONES)),
        minute=draw(st.integers(0, 59)),
        hour=draw(st.integers(0, 23)),
        days_of_week=draw(st.frozensets(st.integers(0, 6), max_size=3)),
        day_of_month=draw(st.sampled_from([0, 0, 0, 1, 15, 29, 31])),
        month=draw(st.sampled_from([0, 0, 0, 2, 3, 10, 11])),
        every=draw(st.sampled_from([timedelta(minutes=1), timedelta(minutes=7), timedelta(hours=5)])),
    )


instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=150, deadline=None)
@given(periods(), instants)
def test_latest_and_next_bracket_the_instant(p: Period, at: datetime) -> None:
    last = latest_slot(p, at)
    nxt = next_slot(p, at)
    assert last is None or last <= at
    assert nxt is None or nxt > at
    if last is not None:
        # nothing fires between the latest slot and `at`, and the latest slot is a slot
        assert next_slot(p, last) is None or next_slot(p, last) > at  # type: ignore[operator]
        assert next_slot(p, last - timedelta(microseconds=1)) == last
        assert list(slots(p, last, at + timedelta(microseconds=1))) == [last]
    if nxt is not None:
        assert latest_slot(p, nxt) == nxt
        assert latest_slot(p, nxt - timedelta(microseconds=1)) == last


def _brute_hourly(p: Period, start: datetime, end: datetime) -> list[datetime]:
    """Reference: every whole UTC minute whose local minute is `minute` on a matching local day."""
    z = ZoneInfo(p.timezone)
    out = []
    t = start.replace(second=0, microsecond=0)
    while t < end:
        local = t.astimezone(z)
        if (
            t >= start
            and local.minute == p.minute
            and (not p.days_of_week or local.weekday() in p.days_of_week)
            and (not p.day_of_month or local.day == p.day_of_month)
            and (not p.month or local.month == p.month)
        ):
            out.append(t)
        t += timedelta(minutes=1)
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(ZONES),
    st.integers(0, 59),
    st.frozensets(st.integers(0, 6), max_size=2),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
)
def test_hourly_matches_a_minute_by_minute_reference(
    tz: str, minute: int, dows: frozenset[int], start: datetime
) -> None:
    p = Period("h", Frequency.HOURLY, timezone=tz, minute=minute, days_of_week=dows)
    end = start + timedelta(days=2)
    assert list(slots(p, start, end)) == _brute_hourly(p, start, end)


@pytest.mark.parametrize("tz", ZONES)
def test_hourly_reference_across_every_2024_transition(tz: str) -> None:
    z = ZoneInfo(tz)
    p = Period("h", Frequency.HOURLY, timezone=tz, minute=45)
    # find the offset changes of 2024 day by day and compare around each
    day = utc(2024, 1, 1)
    while day < utc(2025, 1, 1):
        nxt = day + timedelta(days=1)
        if day.astimezone(z).utcoffset() != nxt.astimezone(z).utcoffset():
            start, end = day - timedelta(hours=12), nxt + timedelta(hours=12)
            assert list(slots(p, start, end)) == _brute_hourly(p, start, end)
        day = nxt
