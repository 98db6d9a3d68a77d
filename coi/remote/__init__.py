"""Sessions on a remote Incus server or cluster: trust (adding a remote), and the
workspace carried to a remote session and back. The named remotes themselves are kept
by coi/config/remotes.py, which the config's endpoint reads."""
