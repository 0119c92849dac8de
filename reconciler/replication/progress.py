"""Progress of one transfer (bytes checked, scanned, sent, sent on the wire, rate, ETA) and the
send throttle. Pure Python, no gRPC: the daemon's status and the CLI's progress bar use these too."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..errors import ReconcilerError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransferStats:
    """A snapshot of one transfer's counters.

    checked: logical bytes compared against what the target holds; scanned: bytes read at the source
    to be sent; sent: content bytes that travelled (uncompressed size); wire: bytes on the wire
    (compressed, protocol overhead included); total: expected wire bytes (0 = not known yet; guessed
    for the volumes whose cost is not known yet, see VolumeEstimate)."""

    phase: str = "connect"
    volume: str = ""
    checked_bytes: int = 0
    scanned_bytes: int = 0
    sent_bytes: int = 0
    wire_bytes: int = 0
    total_bytes: int = 0
    rate_bps: float = 0.0
    eta_seconds: float = -1.0
    volumes_done: int = 0
    volumes_total: int = 0
    parent_set_id: str = ""
    chunks_resent: int = 0


StatsFn = Callable[[TransferStats], None]


def no_stats(_: TransferStats) -> None:
    return None


class Meter:
    """Counters of a running transfer, thread-safe; reports at most every `interval` seconds
    (and always on a phase change or when asked)."""

    RATE_WINDOW = 5.0

    def __init__(
        self,
        report: StatsFn = no_stats,
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._report = report
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stats = TransferStats()
        self._samples: deque[tuple[float, int]] = deque()
        self._started = clock()
        self._last_report = 0.0
        self._base_wire = 0  # wire bytes when the total became known (ETA counts from there)

    @property
    def stats(self) -> TransferStats:
        with self._lock:
            return self._derived(self._clock())

    @property
    def seconds(self) -> float:
        return self._clock() - self._started

    def update(self, *, force: bool = False, **changes: object) -> None:
        with self._lock:
            phase_changed = "phase" in changes and changes["phase"] != self._stats.phase
            self._stats = replace(self._stats, **changes)  # type: ignore[arg-type]
            now = self._clock()
            due = force or phase_changed or now - self._last_report >= self._interval
            if due:
                self._last_report = now
                snap = self._derived(now)
        if due:
            self._report(snap)

    def add(
        self, *, checked: int = 0, scanned: int = 0, sent: int = 0, wire: int = 0, resent: int = 0
    ) -> None:
        with self._lock:
            s = self._stats
            self._stats = replace(
                s,
                checked_bytes=s.checked_bytes + checked,
                scanned_bytes=s.scanned_bytes + scanned,
                sent_bytes=s.sent_bytes + sent,
                wire_bytes=s.wire_bytes + wire,
                chunks_resent=s.chunks_resent + resent,
            )
            now = self._clock()
            if wire:
                self._samples.append((now, self._stats.wire_bytes))
                while len(self._samples) > 2 and now - self._samples[0][0] > self.RATE_WINDOW:
                    self._samples.popleft()
            due = now - self._last_report >= self._interval
            if due:
                self._last_report = now
                snap = self._derived(now)
        if due:
            self._report(snap)

    def expect(self, more_wire_bytes: int) -> None:
        """More bytes are known to be coming (a need list arrived, a volume's cost was guessed):
        the ETA's total grows; or fewer (a guess came out lower), and it shrinks."""
        with self._lock:
            total = max(0, self._stats.total_bytes + more_wire_bytes)
            self._stats = replace(self._stats, total_bytes=total)

    def _derived(self, now: float) -> TransferStats:
        s = self._stats
        rate = 0.0
        if len(self._samples) >= 2:
            (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
            if t1 > t0:
                rate = (b1 - b0) / (t1 - t0)
            # a stall shows as a falling rate, not the last good one
            if now - t1 > 1.0:
                rate = (b1 - b0) / (now - t0) if now > t0 else 0.0
        elif now > self._started and s.wire_bytes:
            rate = s.wire_bytes / (now - self._started)
        eta = -1.0
        if s.total_bytes and rate > 0:
            eta = max(0.0, (s.total_bytes - s.wire_bytes) / rate)
        elif s.total_bytes and s.wire_bytes >= s.total_bytes:
            eta = 0.0
        return replace(s, rate_bps=rate, eta_seconds=eta)


class VolumeEstimate:
    """One volume's part of a transfer's expected wire bytes (TransferStats.total_bytes), told to
    the meter by the difference whenever it changes: a guess worked out on the side while the
    transfer runs (`guess`), then what the volume really costs once that is known (`settle`).
    A guess that comes after the volume settled is dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._announced = 0  # wire bytes this volume has added to the meter's total
        self._guessed = False
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def known(self, meter: Meter, cost: int) -> None:
        """What estimate_each worked out for the volume (here: its wire bytes)."""
        self.guess(meter, cost)

    def guess(self, meter: Meter, wire: int) -> None:
        with self._lock:
            if not self._settled:
                self._guessed = True
                self._announce(meter, wire)

    def settle(self, meter: Meter, wire: int, *, if_guessed: bool = False) -> None:
        """The volume costs `wire` bytes (`if_guessed`: only replaces a guess; a volume without
        one adds nothing, so that the total stays what the others expect, not part of it)."""
        with self._lock:
            if not self._settled and (self._guessed or not if_guessed):
                self._announce(meter, wire)
            self._settled = True

    def _announce(self, meter: Meter, wire: int) -> None:
        if wire != self._announced:
            meter.expect(wire - self._announced)
            self._announced = wire


# what one volume will cost: (set_id, volume, parent_set_id, given_up) -> bytes; given_up() says
# the answer is no longer wanted
CostFn = Callable[[str, str, str, Callable[[], bool]], int]


def _given_up(stop: threading.Event, estimate: VolumeEstimate) -> bool:
    return stop.is_set() or estimate.settled


def estimate_each(
    volumes: Sequence[tuple[str, str, str, VolumeEstimate]],
    cost: CostFn,
    meter: Meter,
    stop: threading.Event,
    pool: str,
) -> None:
    """Work out each (set_id, volume, parent_set_id, estimate) in turn with `cost`, on a thread
    while the volumes are sent, and tell each estimate what came out. A volume that settled
    first, or whose cost cannot be worked out, keeps no guess; `stop` ends it."""
    for set_id, volume, parent_set_id, estimate in volumes:
        if stop.is_set():
            return
        if estimate.settled:
            continue
        try:
            n = cost(set_id, volume, parent_set_id, functools.partial(_given_up, stop, estimate))
        except (OSError, ReconcilerError) as exc:
            log.debug("pool %s: no size estimate for %s/%s: %s", pool, set_id, volume, exc)
            continue
        if not stop.is_set():
            estimate.known(meter, n)


class Throttle:
    """A token bucket on wire bytes: `take(n)` sleeps so the average rate stays at `bps`
    (bursts up to a quarter second's worth). 0 means unlimited."""

    def __init__(
        self,
        bps: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.bps = max(0, int(bps))
        self._clock = clock
        self._sleep = sleep
        self._burst = max(64 * 1024, self.bps // 4)
        self._tokens = float(self._burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        if not self.bps or n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self._burst), self._tokens + (now - self._at) * self.bps)
            self._at = now
            self._tokens -= n
            wait = -self._tokens / self.bps if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


def human_rate(bps: float) -> str:
    v = float(bps)
    for unit in ("B/s", "KiB/s", "MiB/s", "GiB/s"):
        if v < 1024 or unit == "GiB/s":
            return f"{v:.0f} {unit}" if unit == "B/s" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} GiB/s"
