"""The workspace on the host: checkpoints and rollback, and the sweep of planted
submodules."""
