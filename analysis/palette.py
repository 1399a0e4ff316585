"""One colour per optimizer variant, the same in every figure of every report.

The colour is a function of the variant's label alone, never of what else a sweep contains:

- the optimizer's name picks the hue: a fixed, colour-blind-safe palette for the built-in names
  (Okabe & Ito's, with a few from Tableau), and for any other name (a plugin, a class path such
  as torch.optim.NAdam, a notebook registration) a hue from a stable hash of the name (md5, not
  Python's salted hash), at a lightness and saturation that read on white;
- a variant's qualifier (the "(beta1=0.9)" of "adam (beta1=0.9)") picks a shade of that hue, again
  from a stable hash, so adam's variants stay recognisably adam's.

Theory is drawn in the measurement's hue, lighter and dashed (THEORY_STYLE), never in its look.
Where two variants of one report would get the same shade, the later (in sorted order) takes the
next free shade: still deterministic, and distinct within the report.
"""
from __future__ import annotations

import colorsys
import hashlib

from matplotlib.colors import to_hex, to_rgb

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
}
# Lightness factors for a variant's shades: the plain name first, then darker and lighter ones.
SHADES = (1.0, 0.6, 1.45, 0.8, 1.25)
THEORY_STYLE = {"linestyle": (0, (4, 2)), "linewidth": 1.3, "alpha": 0.75}
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


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


def palette(labels) -> dict[str, str]:
    """{label: colour} for the variants of one report: variant_color, with shade collisions
    between variants of one name moved to the next free shade (in sorted order)."""
    out, taken = {}, {}
    for label in sorted(set(map(str, labels))):
        name, qualifier = split_label(label)
        color = variant_color(label)
        used = taken.setdefault(name, set())
        if color in used:
            for factor in SHADES + (0.45, 1.6, 0.7, 1.35):
                candidate = shade(base_color(name), factor)
                if candidate not in used:
                    color = candidate
                    break
        used.add(color)
        out[label] = color
    return out


__all__ = ["BUILT_IN", "MARKERS", "THEORY_STYLE", "base_color", "lighter", "palette", "shade", "split_label",
           "variant_color"]
