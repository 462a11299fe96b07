"""README's frontier figure: measured points (size in MB, fidelity on both evaluation sets) from a CSV
(assets/frontier.csv: one row per measured model, each with the BENCHMARKS.md section it comes from) drawn as one
static SVG by hand, so that it renders on any page without a browser or an image library (plotly's static export
needs kaleido). Log size on x, fidelity on y, one marker per set (hollow where the point was not healed), each set's
frontier (no point both smaller and better) joined; each point numbered beside its markers, the numbers named in a
key under the plot. `python -m compress frontier` redraws it; a test checks the committed SVG is this CSV's."""
import csv
import math
from html import escape

from ..errors import CompressError

W, H, L, R, T, B = 760, 440, 60, 20, 40, 50  # the plot's canvas and margins (px); the key adds KEY_ROW px a row below
KEY_ROW, KEY_COLS = 13, 2
X_LO, X_HI, Y_LO, Y_HI = 1.0, 100.0, 0.5, 1.0  # MB (log), fidelity
SETS = (("fidelity", "our sentences", "#0072B2", "circle"), ("fidelity_docs", "Python docs", "#D55E00", "diamond"))
TITLE = "MiniLM compressed: size against fidelity (measured points, BENCHMARKS.md; hollow: not healed)"
NUM_PX, LINE_PX = 12, 10  # a point number's width and height (px), to keep numbers apart
GUIDES = ((90.9 / 20, "20x"), (90.9 / 10, "10x"), (90.9 / 4, "4x"))  # MiniLM's 90.9 MB divided


def read(path) -> list[dict]:
    """The points: label, size_mb, fidelity, fidelity_docs (and any other column, e.g. where it was measured)."""
    try:
        with open(path, newline="") as f:
            rows = [{**r, **{k: float(r[k]) for k in ("size_mb", "fidelity", "fidelity_docs")}, "label": r["label"]}
                    for r in csv.DictReader(f)]
    except (OSError, KeyError, TypeError, ValueError, csv.Error) as e:
        raise CompressError(f"the frontier's CSV {str(path)[:80]} could not be read ({type(e).__name__}: "
                            "it needs label, size_mb, fidelity and fidelity_docs columns of numbers)") from None
    if not rows or any(not X_LO <= r["size_mb"] <= X_HI for r in rows):
        raise CompressError(f"the frontier's CSV needs at least one point, each between {X_LO:g} and {X_HI:g} MB")
    return rows


def _x(mb: float) -> float:
    return L + (W - L - R) * (math.log10(mb) - math.log10(X_LO)) / (math.log10(X_HI) - math.log10(X_LO))


def _y(f: float) -> float:
    return T + (H - T - B) * (Y_HI - min(max(f, Y_LO), Y_HI)) / (Y_HI - Y_LO)


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (size, fidelity) points no other beats in both (smaller and at least as good), by size."""
    out = []
    for s, f in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or f > out[-1][1]:
            out.append((s, f))
    return out


def _marker(shape: str, x: float, y: float, colour: str, hollow: bool = False) -> str:
    paint = f'fill="white" stroke="{colour}" stroke-width="1.5"' if hollow else f'fill="{colour}"'
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" {paint}/>'
    pts = " ".join(f"{x + dx:.1f},{y + dy:.1f}" for dx, dy in ((0, -5.5), (5.5, 0), (0, 5.5), (-5.5, 0)))
    return f'<polygon points="{pts}" {paint}/>'


def _unhealed(r: dict) -> bool:
    return str(r.get("heal_steps", "")).strip() in ("0", "0.0")


def svg(rows: list[dict], title: str) -> str:
    """The figure as SVG text (deterministic: the same rows give the same bytes)."""
    rows = sorted(rows, key=lambda r: (r["size_mb"], r["label"]))  # numbered by size
    height = H + KEY_ROW * -(-len(rows) // KEY_COLS) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" viewBox="0 0 {W} {height}" '
           'font-family="sans-serif" font-size="11">', f'<rect width="{W}" height="{height}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for mb in (1, 2, 5, 10, 20, 50, 100):
        out.append(f'<line x1="{_x(mb):.1f}" y1="{T}" x2="{_x(mb):.1f}" y2="{H - B}" stroke="#eee"/>'
                   f'<text x="{_x(mb):.1f}" y="{H - B + 16}" text-anchor="middle">{mb}</text>')
    for i in range(6):
        f = Y_LO + i * (Y_HI - Y_LO) / 5
        out.append(f'<line x1="{L}" y1="{_y(f):.1f}" x2="{W - R}" y2="{_y(f):.1f}" stroke="#eee"/>'
                   f'<text x="{L - 6}" y="{_y(f) + 4:.1f}" text-anchor="end">{f:.1f}</text>')
    for mb, name in GUIDES:
        out.append(f'<line x1="{_x(mb):.1f}" y1="{T}" x2="{_x(mb):.1f}" y2="{H - B}" stroke="#999" '
                   f'stroke-dasharray="4 3"/><text x="{_x(mb) + 3:.1f}" y="{H - B - 6}" fill="#666">{name}</text>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">size (MB, log scale; MiniLM fp32 '
               '90.9 MB)</text>')
    out.append(f'<text x="16" y="{(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 16 '
               f'{(T + H - B) / 2})">fidelity (cosine to the original)</text>')
    for k, (key, name, colour, shape) in enumerate(SETS):
        line = " ".join(f"{_x(s):.1f},{_y(f):.1f}" for s, f in pareto([(r["size_mb"], r[key]) for r in rows]))
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        out += [_marker(shape, _x(r["size_mb"]), _y(r[key]), colour, _unhealed(r)) for r in rows]
        out.append(_marker(shape, W - R - 150, T + 14 + 16 * k, colour) +
                   f'<text x="{W - R - 140}" y="{T + 18 + 16 * k}">{name}</text>')
    marks = [(_x(r["size_mb"]), _y(r[key])) for r in rows for key, *_ in SETS]
    placed = []  # each point's number beside its higher marker: right, left, above or below, the first place free
    for n, r in enumerate(rows, 1):  # (of the other numbers and of every marker)
        px, py = _x(r["size_mb"]), _y(max(r["fidelity"], r["fidelity_docs"]))
        spots = [(px + 7 + d, py + 4 + v) for v in (0, -LINE_PX, LINE_PX, -2 * LINE_PX, 2 * LINE_PX) for d in (0, -22)]
        x, y = next(((x, y) for x, y in spots if not any(abs(x - x0) < NUM_PX and abs(y - y0) < LINE_PX
                                                          for x0, y0 in placed)
                     and not any(abs(x + 5 - mx) < 10 and abs(y - 3 - my) < 9 for mx, my in marks)), spots[0])
        placed.append((x, y))
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="9" font-weight="bold" fill="#333">{n}</text>')
    per = -(-len(rows) // KEY_COLS)
    for n, r in enumerate(rows, 1):
        col, row = divmod(n - 1, per)
        out.append(f'<text x="{L - 40 + col * (W - L + 20) / KEY_COLS:.1f}" y="{H + KEY_ROW * row:.1f}" font-size="9" '
                   f'fill="#333"><tspan font-weight="bold">{n}</tspan> {escape(r["label"])}'
                   f'{" (not healed)" if _unhealed(r) else ""}</text>')
    return "\n".join(out + ["</svg>"]) + "\n"


def write(csv_path, out_path) -> None:
    """Draws the CSV's points into out_path (a CompressError, not a traceback, when either cannot be used)."""
    text = svg(read(csv_path), TITLE)
    try:
        with open(out_path, "w") as f:
            f.write(text)
    except OSError as e:
        raise CompressError(f"the figure could not be written to {str(out_path)[:80]} ({e.strerror})") from None
