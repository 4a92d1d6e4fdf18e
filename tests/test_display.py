"""Progress bars and the matplotlib backend: both work without a terminal or a display."""

from rpgen.display import progress_bar, pyplot


def test_a_disabled_bar_still_counts():
    with progress_bar(enabled=False) as bar:
        task = bar.add_task("x", total=3, loss=float("nan"))
        bar.advance(task, 2)
        assert bar.tasks[0].completed == 2


def test_pyplot_draws_on_agg(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "a.png")
    plt.close(fig)
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
