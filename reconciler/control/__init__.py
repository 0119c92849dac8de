"""The daemon's control API: server (in the daemon) and client (in the CLI)."""
