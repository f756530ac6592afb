"""Who signs each request: fixed tokens (one, or one per location from a tokens file),
or a Marketplace app's OAuth tokens, refreshed and minted as the run needs them, with the
credentials file (its model, its text format, and the locked store) as their only state.

May import: ``core``.
"""
