"""The CLI and the library end to end against the sandbox over loopback, as users run them."""
