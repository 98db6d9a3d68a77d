"""The host: `coi setup` (plan and steps), the root helper's installation, and `coi doctor`
with its repairs."""
