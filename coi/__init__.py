"""coi: run AI coding assistants inside Incus system containers."""

__version__ = "0.1.0"
