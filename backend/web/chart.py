"""The accuracy-per-round chart as inline SVG (no JavaScript, no CDN): served and held-out PCK and the share of
served suggestions accepted without correction, all in [0, 1]."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 640, 260, 44
SERIES = (
    ("served_pck", "served suggestions vs submitted (PCK@0.2)", "#d9480f"),
    ("no_correction_share", "served suggestions accepted without correction (share)", "#2b8a3e"),
    ("holdout_pck", "new model on the held-out set (PCK@0.2)", "#1c7ed6"),
)


def accuracy_svg(accuracy: dict[str, list]) -> Markup:
    """Lines of each series (0..1) against round number; points carry a <title> tooltip."""
    xs = [x for key, _, _ in SERIES for x, _ in accuracy.get(key, [])]
    if not xs:
        return Markup('<p class="muted">No accuracy yet: it appears once a round has been labelled and trained.</p>')
    lo, hi = min(xs), max(max(xs), min(xs) + 1)

    def px(x: float) -> float:
        return PAD + (x - lo) / (hi - lo) * (WIDTH - 2 * PAD)

    def py(y: float) -> float:
        return HEIGHT - PAD - y * (HEIGHT - 2 * PAD)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="accuracy per round">']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" class="grid"/>'
            f'<text x="{PAD - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:.2f}</text>'
        )
    for x in range(int(lo), int(hi) + 1):
        parts.append(f'<text x="{px(x):.1f}" y="{HEIGHT - PAD + 18}" text-anchor="middle">{x}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 6}" text-anchor="middle">round</text>')
    for index, (key, label, colour) in enumerate(SERIES):
        points = [(px(x), py(y), x, y) for x, y in accuracy.get(key, []) if y is not None]
        if len(points) > 1:
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
        for a, b, x, y in points:
            parts.append(
                f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4" fill="{colour}">'
                f"<title>round {x}: {escape(label)} = {y:.3f}</title></circle>"
            )
        ly = 16 + 18 * index
        parts.append(
            f'<rect x="{PAD + 8}" y="{ly - 9}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{PAD + 26}" y="{ly + 1}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
