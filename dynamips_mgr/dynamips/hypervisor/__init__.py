"""Hypervisor layer: wire protocol (sans-I/O), one connection, one process."""
