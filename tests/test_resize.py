"""The one resize interface: both engines (numpy, torch) against one reference, slabs, kinds and refusals."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from covtransfer.preprocessing.resize import resize, resize_slabs


def zoom_reference(data: np.ndarray, new_shape, orders) -> np.ndarray:
    """scipy's zoom (voxel areas aligned, edges clamped) one axis at a time, in float64; splines clipped per channel
    to the input's range."""
    out = []
    for channel in data.astype(np.float64):
        result = channel
        for axis, order in enumerate(orders):
            zoom = [1.0, 1.0, 1.0]
            zoom[axis] = new_shape[axis] / result.shape[axis]
            result = ndimage.zoom(result, zoom, order=order, mode="nearest", grid_mode=True)
        out.append(np.clip(result, channel.min(), channel.max()) if max(orders) > 1 else result)
    return np.stack(out)


def random_volume(shape=(2, 6, 12, 10), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# (order, separate_z_axis, order_z, per-axis orders of the reference); 2:1 down- and up-sampling puts the sample
# positions of nearest neighbour on exact ties
CASES = [(1, None, 0, (1, 1, 1)), (0, None, 0, (0, 0, 0)), (1, 0, 0, (0, 1, 1)), (1, 1, 0, (1, 0, 1)),
         (1, 2, 0, (1, 1, 0)), (0, 0, 1, (1, 0, 0))]
SHAPES = [(9, 17, 7), (3, 24, 5), (12, 6, 20)]


@pytest.mark.parametrize("new_shape", SHAPES)
@pytest.mark.parametrize("order, axis, order_z, orders", CASES + [(3, None, 0, (3, 3, 3)), (3, 0, 0, (0, 3, 3)),
                                                                  (3, 2, 1, (3, 3, 1))])
def test_numpy_engine_equals_scipy_zoom_one_axis_at_a_time(new_shape, order, axis, order_z, orders):
    data = random_volume()
    out = resize(data, new_shape, order, axis, order_z)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, *new_shape)
    np.testing.assert_allclose(out, zoom_reference(data, new_shape, orders), atol=1e-5)


@pytest.mark.parametrize("new_shape", SHAPES)
@pytest.mark.parametrize("order, axis, order_z, orders", CASES)
def test_torch_engine_equals_the_same_reference_and_the_numpy_engine(new_shape, order, axis, order_z, orders):
    data = random_volume()
    out = resize(torch.from_numpy(data).half(), new_shape, order, axis, order_z)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, *new_shape)
    reference = zoom_reference(torch.from_numpy(data).half().double().numpy(), new_shape, orders)
    np.testing.assert_allclose(out.numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(out.numpy(), resize(data.astype(np.float16), new_shape, order, axis, order_z),
                               atol=1e-5)


def test_torch_slabs_tile_the_first_axis_and_equal_one_resize():
    x = torch.from_numpy(random_volume())
    whole = resize(x, (13, 9, 15), 1, 1, 0)
    slabs = list(resize_slabs(x, (13, 9, 15), 1, 1, 0, max_voxels=2 * 9 * 15 * 4))  # 4 output rows per slab
    assert [(start, stop) for start, stop, _ in slabs] == [(0, 4), (4, 8), (8, 12), (12, 13)]
    assert torch.equal(torch.cat([slab for _, _, slab in slabs], 1), whole)
    (start, stop, single), = resize_slabs(random_volume(), (13, 9, 15), 3, max_voxels=10)
    assert (start, stop, single.shape) == (0, 13, (2, 13, 9, 15))  # numpy: always one slab


def test_unchanged_shape_returns_the_input_values_as_float32():
    data = random_volume()
    np.testing.assert_array_equal(resize(data.astype(np.float64), data.shape[1:], 3), data)
    assert torch.equal(resize(torch.from_numpy(data), data.shape[1:], 1), torch.from_numpy(data))


@pytest.mark.parametrize("array, new_shape, order, axis, order_z, message", [
    (torch.zeros(1, 4, 4, 4), (5, 5, 5), 3, None, 0, "orders 0 and 1 only"),
    (torch.zeros(1, 4, 4, 4), (5, 5, 5), 1, 0, 2, "orders 0 and 1 only"),
    (np.zeros((4, 4, 4)), (5, 5, 5), 1, None, 0, r"\(C, Z, Y, X\)"),
    (np.zeros((1, 4, 4, 4)), (5, 5), 1, None, 0, "3-D new shape"),
    (np.zeros((1, 4, 4, 4)), (5, 5, 5), 6, None, 0, r"0\.\.5"),
    (np.zeros((1, 4, 4, 4)), (5, 5, 5), 1, 3, 0, "separate_z_axis"),
])
def test_unsupported_combinations_are_refused_with_one_clear_message(array, new_shape, order, axis, order_z, message):
    with pytest.raises(ValueError, match=message):
        resize(array, new_shape, order, axis, order_z)


def test_numpy_callers_never_import_torch():
    code = ("import sys, numpy as np; from covtransfer.preprocessing.resize import resize; "
            "resize(np.ones((1, 3, 4, 5)), (6, 2, 5), 3, 0); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
