"""What a run reads before it sends: the input file (CSV, Excel, Parquet, a glob, a folder
or a URI), validation and the plan, a shard's part of it, and what earlier runs settled
(journals, results files, ``--known``).

May import: ``core``, ``state`` (journals, outputs, object storage). Never the sending
stack.
"""
