"""Calibration files: every accepted layout, every refused one with a message naming the file."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyforge.errors import CalibrationError
from tinyforge.model import calibration as calib

INPUT = [1, 32, 3]


def _samples(n=5, shape=(32, 3), dtype=np.float32):
    return np.random.default_rng(0).normal(size=(n, *shape)).astype(dtype)


def _refused(path, input_shape=INPUT) -> CalibrationError:
    with pytest.raises(CalibrationError) as info:
        calib.load_calibration(path, input_shape)
    error = info.value
    assert str(path) in error.message
    assert error.hint
    return error


def test_npy_batch_is_returned_as_float32(tmp_path):
    x = _samples(7, dtype=np.float64)
    np.save(tmp_path / "x.npy", x)
    loaded = calib.load_calibration(tmp_path / "x.npy", INPUT)
    assert loaded.dtype == np.float32 and loaded.shape == (7, 32, 3)
    np.testing.assert_allclose(loaded, x, rtol=1e-6)


def test_npy_single_sample_gets_a_batch_axis(tmp_path):
    x = _samples(1)[0]
    np.save(tmp_path / "one.npy", x)
    assert calib.load_calibration(tmp_path / "one.npy", INPUT).shape == (1, 32, 3)


def test_dynamic_batch_input_shape_is_accepted(tmp_path):
    np.save(tmp_path / "x.npy", _samples(3))
    assert calib.load_calibration(tmp_path / "x.npy", [None, 32, 3]).shape == (3, 32, 3)


def test_npz_prefers_key_x(tmp_path):
    np.savez(tmp_path / "d.npz", y=np.arange(4), x=_samples(4))
    assert calib.load_calibration(tmp_path / "d.npz", INPUT).shape == (4, 32, 3)


def test_npz_with_one_array_uses_it(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", windows=_samples(2))
    assert calib.load_calibration(tmp_path / "d.npz", INPUT).shape == (2, 32, 3)


def test_npz_with_several_arrays_and_no_x_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", a=_samples(2), b=_samples(2))
    error = _refused(tmp_path / "d.npz")
    assert "'a'" in error.message and "'b'" in error.message and "'x'" in error.message


def test_wrong_shape_names_expected_and_found(tmp_path):
    np.save(tmp_path / "x.npy", _samples(4, shape=(16, 3)))
    error = _refused(tmp_path / "x.npy")
    assert "[4, 16, 3]" in error.message
    assert "[N, 32, 3]" in error.message and "[1, 32, 3]" in error.message


def test_wrong_rank_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", _samples(4)[None])
    assert "[1, 4, 32, 3]" in _refused(tmp_path / "x.npy").message


def test_missing_file(tmp_path):
    assert "does not exist" in _refused(tmp_path / "nope.npz").message


def test_directory(tmp_path):
    assert "directory" in _refused(tmp_path).message


def test_other_extension(tmp_path):
    (tmp_path / "x.csv").write_text("1,2,3\n")
    assert "neither .npy nor .npz" in _refused(tmp_path / "x.csv").message


def test_not_an_npy_file(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"this is text, not numpy")
    assert "not a valid .npy" in _refused(tmp_path / "x.npy").message


def test_truncated_npz(tmp_path):
    np.savez(tmp_path / "full.npz", x=_samples(50))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    assert "not a valid .npz" in _refused(tmp_path / "cut.npz").message


def test_npz_member_that_is_not_an_array(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.npz", "w") as archive:
        archive.writestr("x.npy", b"garbage")
    assert "not a valid .npz" in _refused(tmp_path / "x.npz").message


def test_pickled_object_array_is_never_unpickled(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    error = _refused(tmp_path / "obj.npy")
    assert "pickled object array" in error.message


def test_pickled_object_array_in_npz(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([[1.0], "a"], dtype=object))
    assert "pickled object array" in _refused(tmp_path / "obj.npz").message


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.complex64])
def test_non_float_dtype_is_refused(tmp_path, dtype):
    np.save(tmp_path / "x.npy", np.ones((2, 32, 3), dtype=dtype))
    error = _refused(tmp_path / "x.npy")
    assert np.dtype(dtype).name in error.message and "float" in error.message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_non_finite_values_are_refused(tmp_path, bad):
    x = _samples(3).astype(np.float64)
    x[1, 5, 2] = bad
    np.save(tmp_path / "x.npy", x)
    assert "1 NaN or infinite" in _refused(tmp_path / "x.npy").message


def test_zero_samples_are_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((0, 32, 3), np.float32))
    assert "no samples" in _refused(tmp_path / "x.npy").message


def test_scalar_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.float32(1.0))
    assert "single number" in _refused(tmp_path / "x.npy").message


def test_at_most_limit_samples_are_kept_in_order(tmp_path):
    x = _samples(30)
    np.save(tmp_path / "x.npy", x)
    loaded = calib.load_calibration(tmp_path / "x.npy", INPUT, limit=10)
    np.testing.assert_array_equal(loaded, x[:10])


def test_int8_without_calibration_is_an_error_not_random_data():
    with pytest.raises(CalibrationError) as info:
        calib.require_calibration(None, quantize="int8")
    assert "--calibration" in info.value.hint and "float32" in info.value.hint


def test_model_input_with_unknown_dimensions_is_refused():
    with pytest.raises(CalibrationError, match="unknown dimensions"):
        calib.sample_shape([1, None, 3])


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4),
       sample=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_shape_matching_accepts_one_sample_or_a_stack_of_them(shape, sample):
    array = np.zeros(shape, np.float32)
    if shape == sample:
        expected = (1, *sample)
    elif shape[1:] == sample:
        expected = (shape[0], *sample)
    else:
        with pytest.raises(CalibrationError):
            calib.match_input_shape(array, [1, *sample], "p.npy")
        return
    assert calib.match_input_shape(array, [1, *sample], "p.npy").shape == expected
