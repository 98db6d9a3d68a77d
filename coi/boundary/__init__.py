"""What keeps a hostile container in: the set-id seccomp policy and sweep, the locked view
of protected paths, the subordinate id lines raw.idmap needs."""
