"""Repository tooling: not part of the installed package, run from a checkout as
``python -m tools.NAME``.

- ``repo_url``: point the Colab install cells (written whole by ``install_cell``), the
  README's book address and CITATION.cff at ``repository.url``.
- ``sphinx_book_ref``, ``sphinx_scripts_once``: the book's local Sphinx extensions (the
  commit in ``book-ref.txt`` and the launch buttons; every script tag once).
- ``release_job``, ``release_assets``, ``release_publish``: the release workflow's steps
  (``release_publish``, its publish job, needs the standard library only).
- ``reference_report``: the reference run's ``timings.json`` (from ``/usr/bin/time -v``
  logs) and its ``README.md`` (provenance and tables).
- ``baseline_gap``: the controlled baseline comparison behind ``baseline_gap.json``.
- ``alt_text``: every figure-drawing cell of a chapter, and every ``<img>`` of the built
  book, has alt text.
- ``notebook_outputs``: no notebook carries outputs (the pre-commit hook; the notebook
  tests use it).
"""
