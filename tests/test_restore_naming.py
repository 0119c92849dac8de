"""Which volume a resource or tenant restored to a new copy writes (restore._new_volume: pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.domain import LABEL_RESOURCE, LABEL_TENANT, ObservedMember, SnapshotInfo
from reconciler.restore import RestoreRequest, _new_volume


def _member(volume: str, resource: str, tenant: str = "acme") -> ObservedMember:
    labels = {LABEL_RESOURCE: resource, LABEL_TENANT: tenant}
    return ObservedMember("n1", SnapshotInfo("s1", "snap", "main", volume, datetime.now(UTC), None, labels))


@pytest.mark.parametrize(
    ("level", "name", "volume", "resource", "want"),
    [
        # a tenant named in the path: that segment takes the new name
        ("tenant", "acme", "tenants/acme/vms/web/disk0", "web", "tenants/acme2/vms/web/disk0"),
        # a tenant not in the path: each resource's segment gets the suffix, disks stay together
        ("tenant", "acme", "vms/web/disk0", "web", "vms/web_acme2/disk0"),
        ("tenant", "acme", "vms/web/disk1", "web", "vms/web_acme2/disk1"),
        ("tenant", "acme", "shares/files", "files", "shares/files_acme2"),
        # neither in the path: the last segment gets the new name
        ("tenant", "acme", "data/vol7", "db", "data/vol7_acme2"),
        # a resource: its segment is renamed, or the last segment gets the new name
        ("resource", "web", "vms/web/disk0", "web", "vms/acme2/disk0"),
        ("resource", "db", "data/vol7", "db", "data/vol7_acme2"),
    ],
)
def test_the_new_copy_is_named_after_the_segment_it_replaces(
    level: str, name: str, volume: str, resource: str, want: str
) -> None:
    req = RestoreRequest(set_id="s1", level=level, name=name, new_name="acme2")
    assert _new_volume(_member(volume, resource), req, "acme2") == want
