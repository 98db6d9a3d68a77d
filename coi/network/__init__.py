"""Network isolation: pure policy and nftables rules, name resolution, carrying out a mode,
and the stdlib-only root helper and guard."""
