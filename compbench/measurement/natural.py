"""The natural-length shape: batches of real rows each padded to its own longest row, as a service pads them.

A natural shape's timed calls cycle through a fixed, seeded set of such batches (the same rows for the model and
the teachers it is interleaved with, round by round), so its latency percentiles are over the data's own length
distribution; the row records that distribution as the timed calls ran it.
"""

from __future__ import annotations

import numpy as np

from compbench.tasks.encoding import Batch, batch_list


def first_batch(batches: Batch | list[Batch]) -> Batch:
    return batch_list(batches)[0]


def _spread(values: np.ndarray) -> dict:
    p10, p50, p90, p99 = np.percentile(values, [10, 50, 90, 99])
    return {"min": int(values.min()), "p10": float(p10), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "max": int(values.max()), "mean": float(values.mean())}


def length_distribution(batches: list[Batch], timed: list[int], max_seq_len: int) -> dict:
    """The lengths the timed calls ran (``timed``: the batch index of each): each row's real tokens, each call's
    padded width, and the share of the tokens computed that were padding."""
    row_tokens = np.concatenate([batches[i]["attention_mask"].sum(axis=1) for i in timed])
    widths = np.asarray([batches[i]["attention_mask"].shape[1] for i in timed])
    rows_per_call = batches[0]["attention_mask"].shape[0]
    return {"calls": len(timed), "batches": len(batches), "rows_per_call": int(rows_per_call),
            "truncated_at": max_seq_len, "row_tokens": _spread(row_tokens), "padded_width": _spread(widths),
            "padding_share": float(1.0 - row_tokens.sum() / (widths.sum() * rows_per_call))}


def call_flops(flops_per_example: dict[int, int], batches: Batch | list[Batch], timed: list[int],
               batch_size: int) -> int | None:
    """FLOPs of a timed call, on average over the timed calls: the model computes every padded position, so a
    batch costs ``batch_size`` examples at its padded width (None when a width was not counted)."""
    widths = [batch_list(batches)[i]["input_ids"].shape[1] for i in timed]
    if not widths or any(width not in flops_per_example for width in widths):
        return None
    return round(batch_size * float(np.mean([flops_per_example[width] for width in widths])))
