"""The ground floor: errors, paths, output, processes, locks, signals, fault seams, safe
tar reading and slot naming. Imports nothing of coi outside itself."""
