"""Repository tooling: not part of the installed package, run from a checkout as ``python -m tools.NAME``.

- ``repo_url``: point every chapter's Colab install cell at ``repository.url`` of ``_config.yml``.
- ``reference_report``: the reference run's ``timings.json`` (from ``/usr/bin/time -v`` logs) and
  its ``README.md`` (provenance and tables).
- ``baseline_gap``: the controlled baseline comparison behind ``baseline_gap.json``.
"""
