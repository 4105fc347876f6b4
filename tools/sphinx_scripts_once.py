"""A Sphinx extension for the book: every script tag once per page.

sphinx-thebe and sphinx-togglebutton each add their inline configuration script twice,
once with the file name ``None`` and once with ``""``, so Sphinx's own check for repeats
misses them, and every page of the book declared ``const THEBE_JS_URL`` twice: a console
error on every page ("Identifier 'THEBE_JS_URL' has already been declared"). This drops
the repeats, keeping the first of each script with the same source, inline body and
attributes. ``_config.yml`` loads it (``sphinx: local_extensions``).
"""

from __future__ import annotations


def _script_key(script: object) -> tuple:
    """An inline script's file name is ``None`` or ``""``, depending on who added it."""
    filename = getattr(script, "filename", script) or ""
    attributes = getattr(script, "attributes", {})
    return str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of each script in ``context["script_files"]``."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app) -> dict:
    app.connect("html-page-context", drop_repeated_scripts, priority=1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
