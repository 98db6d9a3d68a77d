"""Building, naming, pinning, publishing and exporting coi's images."""
