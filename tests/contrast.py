"""Text contrast of a page, from its computed styles in the browser (WCAG 2 relative luminance): every visible element
with text of its own, its colour over the backgrounds beneath it (alpha and opacity composited), and the ratio. Enabled
text needs >= 4.5:1 (WCAG AA), a disabled control's text >= 3:1 (issue 25). Used by tests/test_browser.py; run alone
against a served page: `python tests/contrast.py http://127.0.0.1:8501/compress` prints every ratio, lowest first."""
import sys

ENABLED, DISABLED = 4.5, 3.0

JS = r"""() => {
  const parse = s => { const m = /rgba?\(([^)]+)\)/.exec(s || ""); if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(parseFloat); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const lum = c => { const [r, g, b] = c.slice(0, 3).map(v => { v /= 255;
    return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const out = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest("svg, script, style, noscript, [aria-hidden='true']")) continue;
    const own = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join("").trim();
    if (!own) continue;
    const st = getComputedStyle(el);
    if (!el.getClientRects().length || st.visibility !== "visible") continue;
    let fg = parse(st.color), opacity = 1, layers = [];
    if (!fg) continue;
    const r = el.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
    for (let e = el; e; e = e.parentElement) {  // the backgrounds under the text's centre (a label drawn outside
      const s = getComputedStyle(e), b = e.getBoundingClientRect();  // its parent's box, a slider's value above
      opacity *= parseFloat(s.opacity);                                // its thumb, is not on the parent's colour)
      const bg = parse(s.backgroundColor);
      if (bg && bg[3] > 0 && b.left <= x && x <= b.right && b.top <= y && y <= b.bottom) {
        layers.push(bg); if (bg[3] >= 1) break; }
    }
    if (opacity < 0.05) continue;  // shown only on hover (a slider's range ends): not on the page
    let bg = [255, 255, 255, 1];
    for (const c of layers.reverse()) bg = over(c, bg);
    const text = over([fg[0], fg[1], fg[2], fg[3] * opacity], bg);
    const [hi, lo] = [lum(text), lum(bg)].sort((a, b) => b - a);
    const box = el.closest("[data-testid='stElementContainer'], .stElementContainer") || el.parentElement;
    const disabled = !!(el.closest(":disabled, [aria-disabled='true']") ||
      (box && box.querySelector("input:disabled, button:disabled, textarea:disabled, [aria-disabled='true']")));
    out.push({text: own.slice(0, 60), ratio: Math.round((hi + 0.05) / (lo + 0.05) * 100) / 100, disabled,
              color: st.color, testid: (el.closest("[data-testid]") || el).getAttribute("data-testid")});
  }
  return out;
}"""


def measure(page) -> list[dict]:
    """Every visible text of the page with its contrast ratio (lowest first), whether its control is disabled."""
    return sorted(page.evaluate(JS), key=lambda r: r["ratio"])


def short(items: list[dict]) -> list[dict]:
    """The texts below their threshold: 4.5:1 enabled, 3:1 disabled."""
    return [r for r in items if r["ratio"] < (DISABLED if r["disabled"] else ENABLED)]


def lowest(items: list[dict]) -> dict:
    """The lowest ratio of enabled and of disabled text (None where the page has none)."""
    return {k: min((r["ratio"] for r in items if r["disabled"] == d), default=None)
            for k, d in (("enabled", False), ("disabled", True))}


if __name__ == "__main__":
    from playwright.sync_api import sync_playwright
    from test_browser import ARGS, CHROMIUM
    with sync_playwright() as p:
        page = p.chromium.launch(executable_path=CHROMIUM, args=ARGS).new_page(viewport={"width": 1366, "height": 768})
        page.goto(sys.argv[1], timeout=120_000)
        page.wait_for_timeout(15_000)
        got = measure(page)
        for r in got:
            print(f"{r['ratio']:6.2f} {'disabled' if r['disabled'] else 'enabled ':8} {r['testid']} {r['text']!r}")
        print(lowest(got), f"{len(short(got))} short of the thresholds")
