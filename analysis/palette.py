"""One colour per optimizer variant, the same in every figure of every report.

The colour is a function of the variant's label alone, never of what else a sweep contains:

- the optimizer's name picks the hue: a fixed, colour-blind-safe palette for the built-in names
  (Okabe & Ito's, with a few from Tableau), and for any other name (a plugin, a class path such
  as torch.optim.NAdam, a notebook registration) a hue from a stable hash of the name (md5, not
  Python's salted hash), at a lightness and saturation that read on white;
- a variant's qualifier (the "(beta1=0.9)" of "adam (beta1=0.9)") picks a shade of that hue, again
  from a stable hash, so adam's variants stay recognisably adam's.

Theory is drawn in the measurement's hue, lighter and dashed (THEORY_STYLE), never in its look.

An optimizer with several variants in one report (adam (beta1=0) and adam (beta1=0.9)) gets its
variants' colours from that report: two hashed shades of one hue were often near-identical (17
CIELUV units apart for those two). Each variant, in sorted order, takes the colour nearest the
optimizer's own among those at least MIN_DISTANCE (CIELUV ΔE) from every colour already given in
the report (other optimizers' included), from lightnesses 0.15-0.7 and hues within ±0.08 turn of
its own; where none is that far, the farthest. Deterministic, and distinct within the report; an
optimizer with one variant keeps its colour in every report.
"""
from __future__ import annotations

import colorsys
import hashlib

import numpy as np
from matplotlib.colors import to_hex, to_rgb
from seaborn.external import husl

BUILT_IN = {
    "sgd": "#000000",            # black: the reference most comparisons are against
    "rmsprop": "#009E73",        # bluish green
    "adam": "#0072B2",           # blue
    "precond_sgd": "#D55E00",    # vermillion
    "adagrad": "#CC79A7",        # reddish purple
    "momentum": "#E69F00",       # orange
    "amsgrad": "#56B4E9",        # sky blue
    "adaptive_full": "#8C564B",  # brown
    "adagrad_full": "#9467BD",   # violet
    "perturbed_sgd": "#7F7F7F",  # grey
    "cnc_sgd": "#BCBD22",        # olive
    # The matrix optimizers: hashed hues put muon near rmsprop's green and matrix_whitening near
    # adam's blue (the figures they share); these are >= 48 CIELUV units from every built-in but
    # amsgrad (31).
    "muon": "#17BECF",           # cyan
    "matrix_whitening": "#C51B7D",   # magenta
}
# Lightness factors for a variant's shades: the plain name first, then darker and lighter ones.
SHADES = (1.0, 0.6, 1.45, 0.8, 1.25)
THEORY_STYLE = {"linestyle": (0, (4, 2)), "linewidth": 1.3, "alpha": 0.75}
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
# Two variants of one optimizer this far apart in CIELUV (ΔE) read as different colours at a glance.
MIN_DISTANCE = 40.0
SIBLING_LIGHTNESS = np.linspace(0.15, 0.70, 12)
SIBLING_HUE_SHIFTS = (0.0, 0.04, -0.04, 0.08, -0.08)
MAX_LIGHTNESS = 70.0            # CIELUV L*: paler lines fade into a white background


def _stable_fraction(text: str) -> float:
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def base_color(name: str) -> str:
    """The hue of an optimizer name: fixed for the built-ins, else from a stable hash."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    hue = _stable_fraction(name)
    return to_hex(colorsys.hls_to_rgb(hue, 0.42, 0.75))


def shade(color: str, factor: float) -> str:
    """The colour made lighter (factor > 1) or darker (< 1) in HLS lightness; black gets greys."""
    if factor == 1.0:
        return to_hex(color)
    h, lightness, s = colorsys.rgb_to_hls(*to_rgb(color))
    lightness = 0.25 * (factor - 1) + 0.35 * factor if lightness < 0.05 else lightness * factor
    return to_hex(colorsys.hls_to_rgb(h, min(max(lightness, 0.0), 0.85), s))


def lighter(color: str, amount: float = 0.45) -> str:
    """Mixed with white: the theory's version of a measurement's colour."""
    r, g, b = to_rgb(color)
    return to_hex((r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount))


def split_label(label: str) -> tuple[str, str]:
    """'adam (beta1=0.9)' -> ('adam', 'beta1=0.9'); 'torch.optim.NAdam' -> ('torch.optim.NAdam', '')."""
    name, _, rest = label.partition(" (")
    return name, rest.rstrip(")")


def variant_color(label: str) -> str:
    """The colour of one variant label, independent of any other variant."""
    name, qualifier = split_label(label)
    index = 0 if not qualifier else 1 + int(_stable_fraction(qualifier) * (len(SHADES) - 1)) % (len(SHADES) - 1)
    return shade(base_color(name), SHADES[index]) if index else base_color(name)


def luv(color: str) -> np.ndarray:
    """A colour in CIELUV (L, u, v), where Euclidean distance is about what the eye sees."""
    lightness, chroma, hue = husl.rgb_to_lch(*to_rgb(color))
    return np.array([lightness, chroma * np.cos(np.radians(hue)), chroma * np.sin(np.radians(hue))])


def color_distance(a: str, b: str) -> float:
    """CIELUV ΔE between two colours (about 2: just noticeable; 40: clearly different lines)."""
    return float(np.linalg.norm(luv(a) - luv(b)))


def _sibling_candidates(name: str) -> list[list[str]]:
    """Colours a variant of `name` may take, in tiers: its own hue first, then hues ±0.04 and ±0.08
    turn away; lightnesses 0.15-0.7 but never paler than CIELUV L* = MAX_LIGHTNESS (a line must
    stand out on white); within a tier, nearest the optimizer's own colour first."""
    base = base_color(name)
    hue, _, saturation = colorsys.rgb_to_hls(*to_rgb(base))
    shifts = SIBLING_HUE_SHIFTS if saturation > 0 else (0.0,)        # black: greys only
    tiers = []
    for shift in dict.fromkeys(abs(s) for s in shifts):
        tier = {to_hex(colorsys.hls_to_rgb((hue + sign * shift) % 1.0, lightness, saturation))
                for sign in (1, -1) for lightness in SIBLING_LIGHTNESS} | ({base} if shift == 0 else set())
        tiers.append(sorted((c for c in tier if luv(c)[0] <= MAX_LIGHTNESS or c == base),
                            key=lambda c: (color_distance(c, base), c)))
    return tiers


def palette(labels) -> dict[str, str]:
    """{label: colour} for the variants of one report: an optimizer's only variant gets
    variant_color (the same in every report); the variants of an optimizer with several are spread
    apart (module docstring)."""
    groups: dict[str, list[str]] = {}
    for label in sorted(set(map(str, labels))):
        groups.setdefault(split_label(label)[0], []).append(label)
    out = {members[0]: variant_color(members[0]) for members in groups.values() if len(members) == 1}
    for name, members in groups.items():
        if len(members) == 1:
            continue
        tiers = _sibling_candidates(name)
        for label in members:
            taken = list(out.values())
            far = lambda c: min((color_distance(c, t) for t in taken), default=np.inf)      # noqa: E731
            pick = next((c for tier in tiers for c in tier if far(c) >= MIN_DISTANCE), None)
            out[label] = pick or max((c for tier in tiers for c in tier), key=far)
    return out


__all__ = ["BUILT_IN", "MARKERS", "MIN_DISTANCE", "THEORY_STYLE", "base_color", "color_distance", "lighter", "luv",
           "palette", "shade", "split_label", "variant_color"]
