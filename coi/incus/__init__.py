"""Talking to Incus: the one adapter, the IncusAPI Protocol the rest of coi annotates with,
and the exec websockets."""
