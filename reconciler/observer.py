"""Observe what exists on the agents, re-listing only pools whose generation changed.

A pass over an idle system costs one cheap GetNodeInfo per node; the sets are re-aggregated only
when some pool changed.

Copies that other sites' nodes sent here by offsite sync are kept apart from our own sets
(observed.partition): the planner never sees them, so a copy never stands for a set of ours.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from .agent.api import NodeInfo
from .agent.client import AgentClient
from .domain import ObservedState, SnapshotInfo, SnapshotSet
from .errors import ReconcilerError
from .observed import partition

log = logging.getLogger(__name__)


@dataclass
class NodeObservation:
    name: str
    address: str
    reachable: bool = False
    error: str = ""
    info: NodeInfo | None = None
    since: datetime | None = None  # when reachability last changed


@dataclass
class _PoolCache:
    generation: int
    snapshots: list[SnapshotInfo] = field(default_factory=list)


class Observer:
    def __init__(self, *, target: bool = False) -> None:
        """target=False: observe our own nodes (a snapshot without an origin label is ours);
        target=True: observe an offsite target (ours are only the copies our nodes sent there)."""
        self._target = target
        self._ours: tuple[frozenset[str], str] = (frozenset(), "")
        self._pools: dict[tuple[str, str], _PoolCache] = {}
        self._sets: dict[str, SnapshotSet] = {}
        self._foreign: dict[str, SnapshotSet] = {}
        self._lock = threading.Lock()
        self.nodes: dict[str, NodeObservation] = {}
        self.lists_done = 0  # pools re-listed since start (tests and metrics look at it)

    @property
    def sets(self) -> dict[str, SnapshotSet]:
        return self._sets

    @property
    def foreign(self) -> dict[str, SnapshotSet]:
        """Sets from elsewhere, by observed.foreign_key."""
        return self._foreign

    def forget_node(self, node: str) -> None:
        with self._lock:
            for key in [k for k in self._pools if k[0] == node]:
                del self._pools[key]
            self.nodes.pop(node, None)
            self._aggregate()

    def observe(
        self,
        clients: Mapping[str, AgentClient],
        now: datetime,
        our_nodes: Collection[str] | None = None,
        *,
        our_site: str = "",
    ) -> ObservedState:
        """our_nodes: the nodes whose snapshots are ours (default: the observed ones); our_site: the
        config's site name, which copies we sent carry (observed.is_ours)."""
        ours = (frozenset(clients if our_nodes is None else our_nodes), our_site)
        with self._lock:
            infos = self._node_infos(clients, now)
            changed = ours != self._ours
            self._ours = ours
            for node, info in infos.items():
                if info is None:
                    continue
                present = {p.name for p in info.pools}
                for key in [k for k in self._pools if k[0] == node and k[1] not in present]:
                    del self._pools[key]
                    changed = True
                for pool in info.pools:
                    cached = self._pools.get((node, pool.name))
                    if cached is not None and cached.generation == pool.generation:
                        continue
                    try:
                        gen, snaps = clients[node].list_snapshots(pool.name)
                    except ReconcilerError as exc:
                        self._mark(node, False, f"listing pool {pool.name}: {exc}", now)
                        continue
                    self.lists_done += 1
                    self._pools[(node, pool.name)] = _PoolCache(gen, snaps)
                    changed = True
            for node in [n for n in self.nodes if n not in clients]:
                self.nodes.pop(node)
            for key in [k for k in self._pools if k[0] not in clients]:
                del self._pools[key]
                changed = True
            if changed:
                self._aggregate()
            unreachable = frozenset(n for n, o in self.nodes.items() if not o.reachable)
            return ObservedState(sets=self._sets, unreachable_nodes=unreachable, foreign=self._foreign)

    def _aggregate(self) -> None:
        self._sets, self._foreign = partition(
            ((node, s) for (node, _pool), cache in self._pools.items() for s in cache.snapshots),
            self._ours[0],
            our_site=self._ours[1],
            unlabeled_here=not self._target,
        )

    def _node_infos(self, clients: Mapping[str, AgentClient], now: datetime) -> dict[str, NodeInfo | None]:
        def one(name: str) -> tuple[str, NodeInfo | None, str]:
            try:
                return name, clients[name].node_info(), ""
            except ReconcilerError as exc:
                return name, None, str(exc)

        if len(clients) > 1:
            with ThreadPoolExecutor(max_workers=min(32, len(clients)), thread_name_prefix="observe") as pool:
                results = list(pool.map(one, sorted(clients)))
        else:
            results = [one(n) for n in clients]
        out: dict[str, NodeInfo | None] = {}
        for name, info, error in results:
            obs = self.nodes.setdefault(name, NodeObservation(name, clients[name].target))
            obs.address = clients[name].target
            if info is not None:
                obs.info = info
            self._mark(name, info is not None, error, now)
            out[name] = info
        return out

    def _mark(self, node: str, reachable: bool, error: str, now: datetime) -> None:
        obs = self.nodes[node]
        if obs.reachable != reachable or obs.since is None:
            obs.since = now
            if reachable:
                log.info("node %s is reachable", node, extra={"node": node})
            else:
                log.warning("node %s is unreachable: %s", node, error, extra={"node": node})
        obs.reachable = reachable
        obs.error = error
