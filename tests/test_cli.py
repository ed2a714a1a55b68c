"""The ``equican show-groups`` command (equican.show): its PNG, its law table, and its answers to bad input."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from equican import list_groups
from equican.cli import main
from equican.show import CANVAS, render_grid, show_groups
from equican.data import load_mnist, write_idx


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``equican *argv`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of the demo (`make demo`'s defaults) over every registered group, shared by the tests that read it."""
    png = tmp_path_factory.mktemp("show_groups") / "nested" / "grid.png"
    status, stdout, stderr = run_cli("show-groups", "--out", str(png))
    return status, stdout, stderr, png


def dark_bands(png: Path) -> int:
    """The number of horizontal bands of the image that are mostly black: one per row of digit panels."""
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64) / 255
    dark_fraction = (rgb.max(axis=2) < 0.2).mean(axis=1)  # per pixel row; text rows stay far below 0.3
    in_band = dark_fraction > 0.3
    return int(np.sum(in_band[1:] & ~in_band[:-1]) + in_band[0])


def test_demo_succeeds_and_writes_a_png(demo):
    status, stdout, stderr, png = demo
    assert status == 0, stderr
    assert png.is_file() and f"wrote {png}" in stdout
    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > height > 100


def test_png_has_one_band_of_panels_per_group(demo, tmp_path):
    *_, png = demo
    assert dark_bands(png) == len(list_groups())
    status, _, stderr = run_cli("show-groups", "--out", str(tmp_path / "two.png"), "--count", "4",
                                "--groups", "rotation,scale")
    assert status == 0, stderr
    assert dark_bands(tmp_path / "two.png") == 2


def test_table_lists_every_registered_group(demo):
    status, stdout, _, _ = demo
    names = list_groups()
    assert len(names) >= 5
    table = stdout[stdout.index("worst error/tolerance"):]
    for name in names:
        assert f"== {name}: " in stdout  # the group's own law report
        row = next(line for line in table.splitlines() if line.split()[:1] == [name])
        assert " passed " in row


def test_grid_layout():
    """One image_grid row per group: K originals, then K transformed, then K transformed back."""
    rows = show_groups(["cyclic", "rotation"], count=3, seed=0)
    fig = render_grid(rows, title="t")
    assert len(fig.axes) == 2 * 3 * 3
    assert fig.axes[0].get_ylabel().startswith("cyclic") and fig.axes[9].get_ylabel().startswith("rotation")
    assert "laws passed" in fig.axes[0].get_ylabel()
    assert "transformed back" in fig._suptitle.get_text() and fig._suptitle.get_text().startswith("t\n")
    # The panels show the row's tensors: original, transformed, restored, in that order.
    shown = [ax.get_images()[0].get_array() for ax in fig.axes[:9]]
    assert np.allclose(shown[0], rows[0].original[0, 0].numpy())
    assert np.allclose(shown[3], rows[0].transformed[0, 0].clamp(0, 1).numpy())
    assert np.allclose(shown[6], rows[0].restored[0, 0].clamp(0, 1).numpy())
    assert shown[0].shape == (CANVAS, CANVAS)


def test_old_cli_names_still_resolve():
    import equican.cli
    import equican.show

    assert equican.cli.show_groups is equican.show.show_groups and equican.cli.render_grid is render_grid


def test_rows_hold_real_transformations():
    rows = {row.name: row for row in show_groups(["cyclic", "rotation", "monotone"], count=4, seed=0)}
    digits = rows["cyclic"].original
    assert digits.shape == (4, 1, CANVAS, CANVAS) and digits.dtype == torch.float32
    # The 28x28 digits sit inside a black margin, so moderate transformations keep them on the canvas.
    assert digits[..., :6, :].abs().max() == 0 and digits[..., -6:].abs().max() == 0
    cyclic = rows["cyclic"]
    assert torch.equal(cyclic.restored, cyclic.original)  # rot90 is exact
    for row in rows.values():
        moved = (row.transformed - row.original).abs().flatten(1).amax(dim=1)
        assert (moved > 0.5).any(), f"{row.name}: no digit visibly transformed"
        assert row.roundtrip_error < 0.03, f"{row.name}: transformed back is far from the original"


def test_seed_controls_the_elements():
    a = show_groups(["rotation"], count=3, seed=5)[0].g
    b = show_groups(["rotation"], count=3, seed=5)[0].g
    c = show_groups(["rotation"], count=3, seed=6)[0].g
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_user_data_directory(tmp_path):
    images, labels = load_mnist("test", limit=5)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)  # raw (not gzip) files are read too
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels.to(torch.uint8))
    status, stdout, stderr = run_cli("show-groups", "--data", str(tmp_path), "--split", "test", "--count", "5",
                                     "--groups", "scale", "--out", str(tmp_path / "g.png"))
    assert status == 0, stderr
    assert (tmp_path / "g.png").is_file()
    status, _, stderr = run_cli("show-groups", "--data", str(tmp_path), "--split", "test", "--count", "6",
                                "--groups", "scale", "--out", str(tmp_path / "g.png"))
    assert status == 2 and "expected at least 6 test digits" in stderr and "got 5" in stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--groups", "rotaton"], "unknown group 'rotaton': registered groups are affine, cyclic, dihedral, monotone, o2"),
    (["--groups", "scale,nope"], "unknown group 'nope'"),
    (["--data", "/nonexistent/mnist"], "expected a directory of MNIST IDX files at /nonexistent/mnist"),
    (["--count", "0"], "expected --count between 1 and 32, got 0"),
    (["--count", "many"], "invalid int value: 'many'"),
    (["--seed", "-1"], "expected --seed to be a non-negative int, got -1"),
    (["--split", "val"], "invalid choice: 'val'"),
])
def test_bad_input_exits_nonzero_with_a_clear_message(tmp_path, argv, message):
    out = tmp_path / "never.png"
    status, stdout, stderr = run_cli("show-groups", "--out", str(out), *argv)
    assert status == 2
    assert message in stderr
    assert not out.exists()  # nothing is written when the input is bad


def test_unknown_group_suggests_the_closest_name():
    status, _, stderr = run_cli("show-groups", "--groups", "rotaton")
    assert status == 2 and "did you mean 'rotation'?" in stderr
    for name in list_groups():
        assert name in stderr


def test_no_command_prints_help():
    status, _, stderr = run_cli()
    assert status == 2 and "show-groups" in stderr


BROKEN_GROUP = """
import sys, torch
from equican import Group
from equican.cli import main

class Drift(Group, name="drift"):  # a translation whose inverse is wrong by a constant
    @property
    def param_shape(self):
        return (1,)
    def identity(self, batch, *, device=None, dtype=None):
        return torch.zeros(batch, 1, device=device, dtype=dtype)
    def sample(self, batch, *, generator=None, device=None, dtype=None):
        return torch.rand(batch, 1, generator=generator).to(device=device, dtype=dtype)
    def compose(self, g, h):
        return g + h
    def inverse(self, g):
        return 0.1 - g
    def act(self, g, x):
        return torch.stack([torch.roll(xi, int(round(float(gi) * 8)), dims=-1) for gi, xi in zip(g, x)])

sys.exit(main(["show-groups", "--groups", "drift", "rotation", "--count", "2", "--out", sys.argv[1]]))
"""


def test_failing_group_laws_exit_one(tmp_path):
    # A separate interpreter, so that the broken group never enters this process's registry.
    proc = subprocess.run([sys.executable, "-c", BROKEN_GROUP, str(tmp_path / "g.png")], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "group laws failed for: drift" in proc.stderr and "rotation" not in proc.stderr
    table = proc.stdout[proc.stdout.index("worst error/tolerance"):]
    assert re.search(r"^drift +Drift +FAILED", table, flags=re.MULTILINE)
    assert re.search(r"^rotation +Rotation2d +passed", table, flags=re.MULTILINE)
    assert (tmp_path / "g.png").is_file()  # the grid is still drawn: it shows what went wrong


def test_console_script_exit_status(tmp_path):
    script = Path(sys.executable).parent / "equican"
    if not script.exists():
        pytest.skip(f"the console script is not installed next to {sys.executable} (pip install -e . makes it)")
    proc = subprocess.run([str(script), "show-groups", "--groups", "nosuch", "--out", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert "equican show-groups: error: unknown group 'nosuch'" in proc.stderr
    assert "Traceback" not in proc.stderr
