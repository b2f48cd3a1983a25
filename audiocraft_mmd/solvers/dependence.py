"""Counting the codes' dependence during a solver's valid/evaluate stages (shared by this package's solvers)."""
import typing as tp


class DependenceStages:
    """Mixin for an AudioCraft solver: `_with_dependence(stage)` runs a stage while the solver feeds the codes of
    every eval forward to `self.dependence` (when `self._collect_codes` is set), then adds the `codes_*` metrics.

    The solver provides `_new_dependence()` (a `CodebookDependence` on the tuples to measure) and calls
    `self.dependence.update(codes)` where it sees the codes.
    """
    _collect_codes = False
    dependence: tp.Any = None

    def _new_dependence(self) -> tp.Any:
        raise NotImplementedError

    def _with_dependence(self, stage: tp.Callable[[], dict]) -> dict:
        """Run a stage while counting the codes of every eval forward; add the dependence statistics."""
        self.dependence = self._new_dependence()
        self._collect_codes = True
        try:
            metrics = stage()
        finally:
            self._collect_codes = False
        self.dependence.reduce()
        dependence = self.dependence.to_metrics(prefix='codes_')
        # The least-used codebook: collapse of any one codebook shows here.
        dependence['codes_util_min'] = min(v for k, v in dependence.items() if k.startswith('codes_util_q'))
        metrics.update(dependence)
        return metrics
