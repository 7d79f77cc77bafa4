"""The validation table as text, in the reference validator's columns: Class, Images, Instances, Box(P, R, mAP50,
mAP50-95). `format_table` is the whole per-class table (`yolojax val`, the end of training); `summary_lines` the
header and the `all` row printed under each training epoch. Formatting only: the numbers come from
`yolojax.eval.val.evaluate` (its result dict).
"""
from __future__ import annotations

NAME_WIDTH = 22
HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)")
ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4


def table_row(name: str, images: int, instances: int, precision: float, recall: float, map50: float,
              map50_95: float) -> str:
    return ROW % (str(name)[:NAME_WIDTH], images, instances, precision, recall, map50, map50_95)


def all_row(result: dict) -> str:
    """The `all` row: every image and box, the mean P, R and the headline mAP50, mAP50-95 of the result's mode."""
    return table_row("all", result["images"], result["instances"], result["precision"], result["recall"],
                     result["map50"], result["map50_95"])


def summary_lines(result: dict) -> str:
    """Header and `all` row (what the reference prints after each training epoch)."""
    return f"{HEADER}\n{all_row(result)}"


def format_table(result: dict, names=None) -> str:
    """The per-class table: a line naming the mode, the header, `all`, one row per class with ground truth, and in
    coco mode a line of the other COCO numbers. `names` is unused (rows carry their names); kept for callers."""
    del names
    rule = "pycocotools COCOeval rules" if result["mode"] == "coco" else "the reference's ap_per_class rules"
    lines = [f"mAP mode: {result['mode']} ({rule}); P and R at the max-F1 confidence", HEADER, all_row(result)]
    lines += [table_row(r["name"], r["images"], r["instances"], r["precision"], r["recall"], r["map50"],
                        r["map50_95"]) for r in result["per_class"]]
    if result["mode"] == "coco":
        c = result["coco"]
        lines.append("COCO: AP75 %.3f  AP_small %.3f  AP_medium %.3f  AP_large %.3f  AR100 %.3f"
                     % (c["map75"], c["map_small"], c["map_medium"], c["map_large"], c["ar100"]))
    return "\n".join(lines)
