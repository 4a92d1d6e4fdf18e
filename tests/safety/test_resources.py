"""Not enough RAM or disk: a clear error before any work starts."""

import pytest
from conftest import TINY, rpgen, set_args
from conftest import check_one_line_error as one_line_error

from rpgen.errors import RpgenError
from rpgen.safety.resources import available_memory, check_resources, free_disk, size_text


def test_check_resources_names_what_and_numbers(tmp_path):
    check_resources("small job", memory=10**6, disk=10**6, disk_path=tmp_path)
    with pytest.raises(RpgenError, match=r"big job: needs about 30\.0 GB of RAM, only 8\.0 GB available"):
        check_resources("big job", memory=30 * 10**9, available=8 * 10**9)
    with pytest.raises(RpgenError, match=r"needs about 5\.0 GB of disk at .*, only 1\.0 GB free"):
        check_resources("job", memory=0, disk=5 * 10**9, disk_path=tmp_path, free=10**9)
    assert available_memory() > 0 and free_disk(tmp_path / "not" / "yet") > 0


def test_train_too_big_for_ram_fails_before_writing(digits_zoo, tmp_path):
    overrides = [o for o in TINY if not o.startswith("model.d_model")] + ["model.d_model=131072"]
    one_line_error(rpgen("train", digits_zoo, "--out", tmp_path / "r", *set_args(overrides)),
                   "training on", "GB of RAM")
    assert not (tmp_path / "r").exists()


def test_generate_too_big_for_disk_fails_before_writing(digits_zoo, tmp_path):
    run = tmp_path / "run"
    assert rpgen("train", digits_zoo, "--out", run, "--no-progress", *set_args()).exit_code == 0
    one_line_error(rpgen("generate", run, "--num", 10**9, "--out", tmp_path / "g"), "generating 1000000000 models",
                   "GB of disk")
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("num_bytes, text", [(0, "0 bytes"), (940, "940 bytes"), (999, "1.0 kB"), (1_000, "1.0 kB"),
                                             (45_600_000, "45.6 MB"), (999_999_999, "1.0 GB"),
                                             (1_000_000_000, "1.0 GB"), (32_224 * 10**9, "32224.0 GB")])
def test_size_text_picks_a_unit_that_shows_the_size(num_bytes, text):
    assert size_text(num_bytes) == text
