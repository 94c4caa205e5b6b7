"""Request bodies the GNS3 1.5 GUI sends (gui-traffic.md §4.1), shared by tests and benches."""

# Every non-empty setting of an IOS router wizard template goes out with a router create.
WIZARD_TEMPLATE = {
    "idlemax": 500,
    "idlesleep": 30,
    "exec_area": 64,
    "mmap": True,
    "sparsemem": True,
    "disk0": 0,
    "disk1": 0,
    "auto_delete_disks": True,
    "system_id": "FTX0945W0MY",
}
