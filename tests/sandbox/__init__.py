"""The sandbox on its own, with plain HTTP clients: it answers as HighLevel does."""
