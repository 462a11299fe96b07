"""Every chart with its text alternative: the figure, then a caption saying in words what it shows (plots.in_words),
for a screen reader and for anyone who cannot read the colours."""
from compress.outputs.plots import in_words
from ui.safe import plain


def show(where, fig, **kw):
    """where.plotly_chart(fig, **kw) (its selection event, where asked), then the figure in words beneath it."""
    event = where.plotly_chart(fig, **kw)
    where.caption("The chart in words: " + plain(in_words(fig)))  # (its labels may be an upload's tokens)
    return event


def columns_first(table, names):
    """The table with these of its columns first, the rest after in their order (a phone shows the first ones)."""
    return table[list(dict.fromkeys([c for c in names if c in table] + list(table)))]
