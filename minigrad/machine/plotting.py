"""Figures without pyplot: matplotlib Figure objects that never touch the global backend, so a notebook that
imports minigrad keeps its own. `subplots` mirrors pyplot.subplots; `save` writes a PNG and returns its path."""


def subplots(*args, figsize=None, **kwargs):
    """(Figure, axes) like matplotlib.pyplot.subplots, but the figure belongs to no pyplot state: show it in a
    notebook by leaving it as a cell's value, or save it with `save`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def get_cmap(name):
    import matplotlib

    return matplotlib.colormaps[name]


def save(fig, path, dpi=110, protect=()):
    """Write `fig` as PNG at `path` (Agg renders it, whatever backend is active), whole or not at all and never over
    a link, a study or a file of `protect` (machine/outputs.py); returns the path."""
    from minigrad.machine.outputs import output_file

    fig.tight_layout()
    with output_file(path, "wb", protect) as f:
        fig.savefig(f, dpi=dpi, format="png")
    return path
