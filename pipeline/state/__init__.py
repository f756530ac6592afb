"""What a run keeps on disk and in object storage: the files around an output (results,
journals, lock, staging), the journal itself, the output's lock, a remote output's
checkpoints, the results' assembly and atomic write, and object storage as users configure
it.

May import: ``core``.
"""
