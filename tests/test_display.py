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


def test_without_a_terminal_progress_is_timed_plain_lines(capsys):
    with progress_bar() as bar:  # pytest's captured stdout is not a terminal
        task = bar.add_task("training", total=100, loss=float("nan"))
        for step in range(1, 101):
            bar.update(task, loss=1.0 / step)
            bar.update(task, completed=step)
        bar.console.print("step 100: generated 0.9")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "training 1/100 loss 1.0000, 0s elapsed"  # the first line at once, no estimate yet
    assert lines[1].startswith("training 100/100 loss 0.0100, 0s elapsed")  # then within 30 s only the last
    assert lines[2:] == ["step 100: generated 0.9"] and "\x1b" not in "".join(lines)
