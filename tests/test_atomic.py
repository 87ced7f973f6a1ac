import os

import pytest

from itmfilter.errors import ItmError
from itmfilter.media.atomic import atomic_output


def test_success_renames_and_keeps_extension(tmp_path):
    out = tmp_path / "out.png"
    with atomic_output(out) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.endswith(".png") and tmp != out
        tmp.write_bytes(b"data")
        assert not out.exists()
    assert out.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["out.png"]


def test_exception_leaves_nothing_and_keeps_old_file(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_keyboard_interrupt_cleans_up(tmp_path):
    out = tmp_path / "clip.mp4"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_output_equal_to_input_refused(tmp_path):
    src = tmp_path / "in.png"
    src.write_bytes(b"precious")
    with pytest.raises(ItmError, match="in.png"):
        with atomic_output(tmp_path / "sub" / ".." / "in.png", inputs=[src]):
            pass
    assert src.read_bytes() == b"precious"


def test_missing_folder_refused(tmp_path):
    with pytest.raises(ItmError, match="does not exist"):
        with atomic_output(tmp_path / "nope" / "x.png"):
            pass
