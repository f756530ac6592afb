"""The tests, laid out as the program is (issue 25).

- ``unit/<package>/``: one package of ``pipeline/`` each (``unit/send`` tests ``pipeline/send``),
  its pure parts first; a few also drive that package's part against the sandbox in process.
- ``e2e/``: the CLI and the library against the sandbox over a real loopback socket, as users
  run them (subprocesses, signals, files on disk, S3).
- ``sandbox/``: the sandbox itself, with plain HTTP clients (it must answer as HighLevel does).
- ``docs/``: the README's shell blocks, ARCHITECTURE's map, the layout's rules, deploy/ and cron.
- ``bench/``: the benchmark harness's own parts.

What a test costs is in its markers (``processes``, ``browser``, ``timing``; see conftest.py):
``make test-fast`` runs the rest in under a minute.
"""
