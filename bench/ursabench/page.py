"""page.py - index.html beside report.md: the same report as one page a
CI job can publish as it is (GitHub Pages, an artefact), with nothing
fetched from the network: the graphs' SVG inline, the style inline, the
trend's figures and graphs appended when a trend was drawn.

The report is Markdown; Python-Markdown (Debian's python3-markdown, with
its tables extension) turns it into HTML.  A small inline script marks
the page with how many graphs the browser laid out with a size (the page
test reads it back from the DOM)."""
import html
import os
import re
import sys


def _markdown():
    try:
        import markdown
    except ImportError:
        # Debian's package, when python3 here is another build of the
        # same release (pyenv's, on the CI machines).
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            import markdown
        except ImportError:
            return None
    return markdown


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1b1b1b; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f2f2f2; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 3px; }
figure.graph { margin: 1.5em 0; }
figure.graph svg { max-width: 100%; height: auto; border: 1px solid #eee; }
h1, h2, h3 { line-height: 1.2; }
"""

SCRIPT = """
window.addEventListener("load", function () {
  var all = document.querySelectorAll("figure.graph svg"), drawn = 0;
  for (var i = 0; i < all.length; i++) {
    var b = all[i].getBoundingClientRect();
    if (b.width > 0 && b.height > 0 && all[i].querySelector("path, polyline, line, rect")) drawn++;
  }
  document.body.setAttribute("data-graphs", String(all.length));
  document.body.setAttribute("data-drawn", String(drawn));
});
"""


def _inline_svgs(body, folder):
    """Puts each <img> of an SVG graph in as the SVG itself; a graph that
    is not there becomes a note, not a broken image."""
    def one(m):
        src, alt = m.group("src"), m.group("alt")
        path = os.path.join(folder, src)
        if not src.endswith(".svg") or not os.path.exists(path):
            return f"<p><em>graph {html.escape(alt)} was not drawn</em></p>"
        svg = open(path, encoding="utf-8", errors="replace").read()
        svg = svg[svg.find("<svg"):]  # no XML prolog or doctype inside HTML
        return (f'<figure class="graph" id="graph-{html.escape(alt)}">'
                f"{svg}</figure>")
    return re.sub(r'<img alt="(?P<alt>[^"]*)" src="(?P<src>[^"]+)"\s*/?>',
                  one, body)


def page(out, trend_dir=None):
    """Writes out/index.html from out/report.md (and trend_dir/trend.md
    when it exists); returns its path, or None without Python-Markdown."""
    md = _markdown()
    if md is None:
        print("bench: no index.html: Python-Markdown is not installed "
              "(apt-get install python3-markdown)", file=sys.stderr)
        return None
    conv = md.Markdown(extensions=["tables"])
    text = open(os.path.join(out, "report.md"), encoding="utf-8").read()
    body = _inline_svgs(conv.convert(text), out)
    if trend_dir and os.path.exists(os.path.join(trend_dir, "trend.md")):
        conv.reset()
        t = open(os.path.join(trend_dir, "trend.md"), encoding="utf-8").read()
        t = t.replace("# ursa bench trends", "## Trends over commits", 1)
        body += _inline_svgs(conv.convert(t), trend_dir)
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width, "
           "initial-scale=1\"><title>ursa bench report</title>"
           f"<style>{STYLE}</style><script>{SCRIPT}</script></head>"
           f"<body>{body}</body></html>\n")
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)
    return path
