"""Explorers: what `dora grid` shows for this package's XPs."""
import treetable as tt

from audiocraft.grids._base_explorers import BaseExplorer


class CompressionMMDExplorer(BaseExplorer):
    """Compression XPs with the independence term: the term, the codes' dependence, and reconstruction quality."""

    def get_grid_metrics(self):
        return [
            tt.group("train", [
                tt.leaf("epoch"),
                tt.leaf("mmd", ".2e"),
                tt.leaf("mmd_weight", ".2g"),
                tt.leaf("mmd_grad_ratio", ".2g"),
                tt.leaf("l1", ".4f"),
            ], align=">"),
            tt.group("valid", [
                tt.leaf("mmd", ".2e"),
                tt.leaf("codes_tc", ".3f"),
                tt.leaf("codes_mi_mean", ".3f"),
                tt.leaf("codes_util_min", ".2f"),
                tt.leaf("msspec", ".4f"),
                tt.leaf("sisnr", ".2f"),
            ], align=">"),
            tt.group("evaluate", [
                tt.leaf("sisnr", ".2f"),
                tt.leaf("codes_tc", ".3f"),
                tt.leaf("codes_mi_mean", ".3f"),
            ], align=">"),
        ]


class LMExplorer(BaseExplorer):
    """LM XPs (musicgen_mmd): NLL in bits per frame, per-codebook cross-entropy, the tokens' dependence on the
    pattern's one-step tuple."""

    def get_grid_metrics(self):
        return [
            tt.group("train", [
                tt.leaf("epoch"),
                tt.leaf("nll_bits_per_frame", ".3f"),
            ], align=">"),
            tt.group("valid", [
                tt.leaf("nll_bits_per_frame", ".3f"),
                tt.leaf("ce_q1", ".3f"),
                tt.leaf("ce_q2", ".3f"),
                tt.leaf("ce_q3", ".3f"),
                tt.leaf("ce_q4", ".3f"),
                tt.leaf("codes_tc_excess", ".3f"),
                tt.leaf("codes_util_min", ".2f"),
            ], align=">"),
        ]
