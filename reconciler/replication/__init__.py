"""Replication of snapshot sets between agents: offsite sync and sync back.

The daemon asks the source agent to push a set to a target agent (`Replicate`); the source dials
the target's Replication service over mTLS and streams the data (`Receive`). The target verifies
what it receives and commits a set only when every member is complete.

- chunkstore: the source offers the snapshot's manifest (its chunk list), the target answers with
  the chunks it lacks, only those travel (as stored, compressed), each is verified against its
  BLAKE3 hash on arrival; changed blocks travel as deltas against the block the target holds.
- btrfs: `btrfs send` with the newest common parent, `btrfs receive` into staging, verified and
  committed by a read-only snapshot into the store layout.
"""
