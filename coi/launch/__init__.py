"""The one launch path: an instance's full config before first boot, the boot barrier,
teardown, and coi's versioned profiles."""
