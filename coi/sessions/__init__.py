"""Sessions: opening one from an explicit request, finishing it exactly once, the saved-
session store, and credentials."""
