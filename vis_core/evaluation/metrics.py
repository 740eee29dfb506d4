"""The YouTube-VIS summary figures, their JSON form and a printable table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# JSON key and the dataclass field holding it, in the official `stats` order.
SUMMARY_KEYS: tuple[tuple[str, str], ...] = (
    ("AP", "ap"),
    ("AP50", "ap50"),
    ("AP75", "ap75"),
    ("APs", "ap_small"),
    ("APm", "ap_medium"),
    ("APl", "ap_large"),
    ("AR1", "ar1"),
    ("AR10", "ar10"),
    ("AR100", "ar100"),
)
UNDEFINED = -1.0  # as in the official code: no GT to measure against


@dataclass(frozen=True)
class CategoryAP:
    """AP over IoU 0.50:0.95 of one category (all areas, 100 detections); -1 if undefined."""

    category_id: int
    name: str
    ap: float


@dataclass(frozen=True)
class YtvisMetrics:
    """Video mask AP/AR as fractions in [0, 1], -1 where undefined (official `stats[0:9]`).

    ap_small/medium/large use the YouTube-VIS area ranges (mean track area up to 128²,
    128² to 256², from 256²); ar1/10/100 cap the results per video and category.
    """

    ap: float
    ap50: float
    ap75: float
    ap_small: float
    ap_medium: float
    ap_large: float
    ar1: float
    ar10: float
    ar100: float
    per_category: tuple[CategoryAP, ...]

    @property
    def stats(self) -> tuple[float, ...]:
        """The nine figures in the official order (AP, AP50, ..., AR100)."""
        return tuple(getattr(self, name) for _, name in SUMMARY_KEYS)

    def to_json_dict(self) -> dict[str, Any]:
        """`{"AP": .., ..., "AR100": .., "per_category": {name: AP}}`, fractions."""
        out: dict[str, Any] = {key: float(getattr(self, name)) for key, name in SUMMARY_KEYS}
        out["per_category"] = {entry.name: float(entry.ap) for entry in self.per_category}
        return out

    def format_table(self) -> str:
        """An aligned text table: the nine figures, then AP per category, in percent."""
        rows = [(key, getattr(self, name)) for key, name in SUMMARY_KEYS]
        rows += [(f"AP[{entry.name}]", entry.ap) for entry in self.per_category]
        width = max(len(label) for label, _ in rows)
        lines = [f"{'metric':<{width}}  {'value (%)':>9}"]
        lines += [f"{label:<{width}}  {_percent(value):>9}" for label, value in rows]
        return "\n".join(lines)


def _percent(value: float) -> str:
    return "n/a" if value == UNDEFINED else f"{100.0 * value:.2f}"
