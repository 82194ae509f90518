"""The batch-size study: configuration and planning (pure), running the phases on an executor, analysis, report
and figures."""
