"""reconciler: declarative snapshot manager."""

__version__ = "0.1.0"
