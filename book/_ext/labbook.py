"""Sphinx extension of the Mail Lab book: Mermaid diagrams drawn in the reader's browser by the
Mermaid script shipped with the book (``_static/mermaid.min.js``, from the npm registry), never
fetched from a CDN.

``mermaid`` directive: a ```` ```mermaid ```` fence (``myst_fence_as_directive``), in a Markdown
cell or in a Markdown output such as :class:`labkit.display.Diagram`, becomes
``<pre class="mermaid">`` holding the diagram's source; ``labbook-mermaid.js`` draws it as SVG
when the page loads. Other builders get the source as a literal block.
"""
from __future__ import annotations

import html

from docutils import nodes
from docutils.parsers.rst import Directive


class mermaid_node(nodes.General, nodes.Element):
    pass


class Mermaid(Directive):
    has_content = True
    optional_arguments = 0
    final_argument_whitespace = True

    def run(self):
        node = mermaid_node()
        node["code"] = "\n".join(self.content)
        return [node]


def _visit_html(self, node):
    self.body.append('<pre class="mermaid labbook-mermaid">' + html.escape(node["code"]) + "</pre>\n")
    raise nodes.SkipNode


def _visit_other(self, node):
    self.visit_literal_block(nodes.literal_block(node["code"], node["code"]))
    raise nodes.SkipNode


def _drop_thebe(app, pagename, templatename, context, doctree):
    """Jupyter Book always loads sphinx-thebe, which (registered twice) declares its constants
    twice, a script error on every page, and names a CDN. The book has no live code: drop it."""
    def keep(js):
        body = getattr(js, "attributes", {}).get("body", "") or ""
        return "THEBE_JS_URL" not in body and "sphinx-thebe" not in str(getattr(js, "filename", js) or "")
    if "script_files" in context:
        context["script_files"] = [js for js in context["script_files"] if keep(js)]
    if "css_files" in context:
        context["css_files"] = [c for c in context["css_files"]
                                if "sphinx-thebe" not in str(getattr(c, "filename", c) or "")]


def setup(app):
    app.connect("html-page-context", _drop_thebe)
    app.add_node(mermaid_node, html=(_visit_html, None), latex=(_visit_other, None),
                 text=(_visit_other, None))
    app.add_directive("mermaid", Mermaid)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
