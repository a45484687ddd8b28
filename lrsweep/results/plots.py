"""Every picture lrsweep draws (matplotlib, no screen needed)."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rates(series, path, title="learning rate in effect during each epoch"):
    """One line per schedule: `series` maps a label to the rates of epochs 1..N. Returns the figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rates in series.items():
        ax.plot(range(1, len(rates) + 1), rates, marker="." if len(rates) <= 60 else None, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig
