"""What people and other systems see of a run: progress while it sends, the text and HTML
reports, what to do next (advice), notifications and Prometheus metrics.

May import: ``state``, ``core`` (and the sending stack's gauges, by type only).
"""
