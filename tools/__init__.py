"""Repository tooling: not part of the installed package, run from a checkout as
``python -m tools.NAME``.

- ``repo_url``: point the Colab install cells, the README's book address and
  CITATION.cff at ``repository.url``.
- ``reference_report``: the reference run's ``timings.json`` (from ``/usr/bin/time -v``
  logs) and its ``README.md`` (provenance and tables).
- ``baseline_gap``: the controlled baseline comparison behind ``baseline_gap.json``.
- ``alt_text``: every figure-drawing cell of a chapter, and every ``<img>`` of the built
  book, has alt text.
- ``notebook_outputs``: no notebook carries outputs (the pre-commit hook; the notebook
  tests use it).
"""
