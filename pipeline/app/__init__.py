"""The application: one invocation built from its configuration, and what it does: run
(plan, find earlier state, send, write, report), check, merge, and the Python API
(``create_conversations``) over the same run.

May import: the domain packages (``inputs``, ``send``, ``highlevel``, ``auth``, ``state``,
``observe``) and ``core``; never ``cli``.
"""
