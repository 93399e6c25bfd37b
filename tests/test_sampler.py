"""Patch sampling and the deterministic batch stream: forced foreground, border padding (0 / -1), images smaller than
the patch, and batch ``k`` identical however it is produced (twice, by 0 or 2 workers)."""

import json

import numpy as np
import pytest

from covtransfer.errors import CovtransferError
from covtransfer.training.batch_stream import BatchStream, batch_loader
from covtransfer.training.case_store import CaseStore
from covtransfer.training.sampler import PatchSampler, crop_padded


def write_case(folder, case_id, data, seg, locations=None):
    """A preprocessed case as preprocessing writes it: ``<case>.npz`` (data, seg) and ``<case>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{case_id}.npz", data=data.astype(np.float32), seg=seg.astype(np.int8))
    if locations is None:
        locations = {str(k): np.argwhere(seg[0] == k).tolist() for k in np.unique(seg) if k > 0}
    (folder / f"{case_id}.json").write_text(json.dumps({"case_id": case_id, "class_locations": locations}))


def coordinate_volume(shape):
    """One channel whose value encodes the voxel: ``1 + z * 10000 + y * 100 + x`` (exact in float32)."""
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return (1 + z * 10000 + y * 100 + x)[None].astype(np.float32)


def patch_origin(patch):
    """Where a patch of a coordinate volume starts in the volume (from any voxel inside the image)."""
    inside = np.argwhere(patch[0] > 0)[0]
    value = int(patch[0][tuple(inside)]) - 1
    return np.array([value // 10000, value // 100 % 100, value % 100]) - inside


@pytest.fixture
def corner_lesion(tmp_path):
    """A 24×40×40 case with a 2×3×3 lesion in one corner: random patches rarely see it."""
    seg = np.zeros((1, 24, 40, 40), dtype=np.int8)
    seg[0, 1:3, 2:5, 34:37] = 1
    data = np.random.default_rng(0).normal(size=(1, 24, 40, 40))
    write_case(tmp_path, "a", data, seg)
    return CaseStore(tmp_path, ["a"])


def test_forced_foreground_samples_contain_foreground(corner_lesion):
    sampler = PatchSampler(corner_lesion, ["a"], (12, 16, 16), (8, 12, 12), batch_size=3, oversample_foreground=0.33)
    assert sampler.first_forced == 2  # the last round(3 × 0.33) = 1 sample of each batch is forced
    forced_hits, random_hits = 0, 0
    for k in range(60):
        images, seg = sampler.sample(np.random.default_rng(k))
        assert images.shape == (3, 1, 12, 16, 16) and images.dtype == np.float32
        assert seg.shape == (3, 1, 12, 16, 16) and seg.dtype == np.int8
        forced_hits += int((seg[2] == 1).any())
        random_hits += int((seg[:2] == 1).any(axis=(1, 2, 3, 4)).sum())
    assert forced_hits == 60
    assert random_hits < 20  # without forcing, the corner lesion is mostly missed (3 of these 120 draws)


def test_full_oversampling_and_none(corner_lesion):
    always = PatchSampler(corner_lesion, ["a"], (12, 16, 16), (12, 16, 16), batch_size=2, oversample_foreground=1.0)
    never = PatchSampler(corner_lesion, ["a"], (12, 16, 16), (12, 16, 16), batch_size=2, oversample_foreground=0.0)
    assert always.first_forced == 0 and never.first_forced == 2
    for k in range(20):
        assert (always.sample(np.random.default_rng(k))[1] == 1).any(axis=(1, 2, 3, 4)).all()


def test_crop_padded_pads_data_and_labels():
    array = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6) + 1
    out = crop_padded(array, (-2, 1, 3), (5, 3, 6), fill=0.0)
    expected = np.pad(array, [(0, 0), (2, 0), (0, 0), (0, 3)])[:, 0:5, 1:4, 3:9]
    np.testing.assert_array_equal(out, expected)
    labels = crop_padded(np.ones((1, 4, 5, 6), dtype=np.int8), (2, -3, 0), (4, 4, 4), fill=-1)
    assert labels.dtype == np.int8
    assert (labels[:, :2, 3:, :] == 1).all() and (labels == -1).sum() == 4 * 4 * 4 - 2 * 1 * 4
    assert (crop_padded(array, (10, 0, 0), (2, 2, 2), fill=0.0) == 0).all()  # entirely outside


def test_crop_padded_equals_pad_then_slice_for_random_boxes():
    """acvl-utils does the cropping; the answer must be the whole array padded with ``fill`` and sliced, wholly
    outside boxes (which acvl-utils alone fills with 0) included."""
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 3, (1, 6, 7, 8)).astype(np.int8)
    margin = 12
    padded = np.pad(labels, [(0, 0)] + [(margin, margin)] * 3, constant_values=-1)
    for _ in range(200):
        size = rng.integers(1, 10, 3)
        start = rng.integers(-margin, np.array(labels.shape[1:]) + margin - size + 1)
        expected = padded[(slice(None),) + tuple(slice(s + margin, s + margin + n) for s, n in zip(start, size))]
        out = crop_padded(labels, start, size, fill=-1)
        assert out.dtype == np.int8 and np.array_equal(out, expected)


def test_random_patches_reach_past_borders_padded_with_zero_and_minus_one(tmp_path):
    shape = (20, 24, 28)
    write_case(tmp_path, "c", coordinate_volume(shape), np.zeros((1, *shape)), locations={})
    store = CaseStore(tmp_path, ["c"])
    initial, final = np.array([12, 16, 16]), np.array([8, 10, 12])
    sampler = PatchSampler(store, ["c"], initial, final, batch_size=2, oversample_foreground=0.0)
    margin = (initial - final) // 2
    starts = []
    for k in range(150):
        images, seg = sampler.sample(np.random.default_rng(k))
        for image, label in zip(images, seg):
            outside = image[0] == 0
            assert ((label[0] == -1) == outside).all()  # padded: data 0, labels -1, nowhere else
            assert (label[0][~outside] == 0).all()
            start = patch_origin(image)
            np.testing.assert_array_equal(image, crop_padded(coordinate_volume(shape), start, initial, 0.0))
            starts.append(start)
            centre = label[0][tuple(slice(m, m + f) for m, f in zip(margin, final))]
            assert (centre >= 0).all()  # the final (centre) patch always lies inside the image
    starts = np.array(starts)
    np.testing.assert_array_equal(starts.min(0), -margin)  # reaches half the augmentation margin past each border
    np.testing.assert_array_equal(starts.max(0), np.array(shape) - initial + margin)


def test_image_smaller_than_patch_is_centred_and_padded(tmp_path):
    shape = (5, 6, 30)  # smaller than the patch along z and y, larger along x
    seg = np.zeros((1, *shape), dtype=np.int8)
    seg[0, 2, 3, 10] = 1
    write_case(tmp_path, "s", coordinate_volume(shape), seg)
    store = CaseStore(tmp_path, ["s"])
    sampler = PatchSampler(store, ["s"], (8, 10, 12), (8, 10, 12), batch_size=2, oversample_foreground=0.5)
    z_starts = set()
    for k in range(30):
        images, labels = sampler.sample(np.random.default_rng(k))
        assert images.shape == (2, 1, 8, 10, 12)
        for image, label in zip(images, labels):
            start = patch_origin(image)
            z_starts.add(int(start[0]))
            assert start[1] == -2  # y shortfall 4: 2 voxels of padding on either side
            inside = image[0] > 0
            assert inside.sum(axis=(1, 2)).tolist().count(6 * 12) == 5  # all five z slices, six full rows each
            assert ((label[0] == -1) == ~inside).all() and (image[0][~inside] == 0).all()
        assert (labels[1] == 1).sum() == 1  # the forced sample holds the single foreground voxel
    assert z_starts == {-2, -1}  # z shortfall 3: 1 or 2 voxels of padding before, as nnU-Net draws it


def test_case_store_unpacks_once_and_refuses_missing_cases(tmp_path):
    write_case(tmp_path, "a", np.ones((1, 4, 4, 4)), np.zeros((1, 4, 4, 4)))
    store = CaseStore(tmp_path, ["a"])
    data, seg = store.arrays("a")
    assert isinstance(data, np.memmap) and data.shape == (1, 4, 4, 4) and seg.dtype == np.int8
    npy = tmp_path / "a.npy"
    stamp = npy.stat().st_mtime_ns
    CaseStore(tmp_path, ["a"])
    assert npy.stat().st_mtime_ns == stamp
    with pytest.raises(CovtransferError, match="missing"):
        CaseStore(tmp_path, ["b"])


@pytest.fixture
def stream_sources(tmp_path):
    rng = np.random.default_rng(3)
    samplers = []
    for name in ("x", "y"):
        seg = (rng.random((1, 10, 12, 12)) > 0.9).astype(np.int8)
        write_case(tmp_path / name, name, rng.normal(size=(1, 10, 12, 12)), seg)
        store = CaseStore(tmp_path / name, [name])
        samplers.append(PatchSampler(store, [name], (8, 8, 8), (6, 6, 6), batch_size=2))
    return samplers


def test_batch_k_is_deterministic(stream_sources):
    stream = BatchStream(stream_sources, [1.0, 1.0], seed=7, stream=0)
    first, again = stream[5], stream[5]
    assert first["index"] == 5 and first["source"] in (0, 1)
    assert first["source"] == again["source"]
    assert np.array_equal(first["images"].numpy(), again["images"].numpy())
    assert np.array_equal(first["seg"].numpy(), again["seg"].numpy())
    assert not np.array_equal(stream[6]["images"].numpy(), first["images"].numpy())
    other_rank = BatchStream(stream_sources, [1.0, 1.0], seed=7, stream=0, rank=1)
    assert not np.array_equal(other_rank[5]["images"].numpy(), first["images"].numpy())
    assert [other_rank.source_of(k) for k in range(50)] == [stream.source_of(k) for k in range(50)]
    other_seed = BatchStream(stream_sources, [1.0, 1.0], seed=8, stream=0)
    assert not np.array_equal(other_seed[5]["images"].numpy(), first["images"].numpy())


def test_batch_stream_is_independent_of_the_number_of_workers(stream_sources):
    stream = BatchStream(stream_sources, [1.0, 1.0], seed=1, stream=0)
    serial = list(batch_loader(stream, 3, 9, num_workers=0, pin_memory=False))
    parallel = list(batch_loader(stream, 3, 9, num_workers=2, pin_memory=False))
    assert [int(b["index"]) for b in serial] == [int(b["index"]) for b in parallel] == list(range(3, 9))
    for a, b in zip(serial, parallel):
        assert int(a["source"]) == int(b["source"])
        assert np.array_equal(a["images"].numpy(), b["images"].numpy())
        assert np.array_equal(a["seg"].numpy(), b["seg"].numpy())
    assert np.array_equal(serial[2]["images"].numpy(), stream[5]["images"].numpy())


def test_source_weights(stream_sources):
    stream = BatchStream(stream_sources, [3.0, 1.0], seed=0, stream=0)
    share = np.mean([stream.source_of(k) == 0 for k in range(4000)])
    assert 0.72 < share < 0.78
    single = BatchStream(stream_sources[:1], [1.0], seed=0, stream=0)
    assert {single.source_of(k) for k in range(20)} == {0}


def test_bounds_by_hand_as_nnunet(corner_lesion):
    """Start ranges take half of ``max(margin, patch - image)`` past each border (nnU-Net's data loader)."""
    # the demo's cpu-preset patch (final 24x56x56, loaded at 57x89x71) on an anisotropic 50x104x118 image:
    # margins (33, 33, 15); z is short by 7 but the margin wins, so pads are (33, 33, 15):
    # nnU-Net's get_bbox takes lower (-pad) // 2 = -ceil(pad / 2) and upper image - patch + ceil(pad / 2):
    # lower (-17, -17, -8); upper (-7+17, 15+17, 47+8)
    sampler = PatchSampler(corner_lesion, ["a"], (57, 89, 71), (24, 56, 56), batch_size=2)
    lower, upper = sampler.bounds((50, 104, 118))
    assert lower.tolist() == [-17, -17, -8] and upper.tolist() == [10, 32, 55]
    # an image smaller than the patch along z and y and no margin: the odd shortfall (3) reaches 2 voxels out on
    # either side, as nnU-Net's rounding does, the even one (4) 2
    sampler = PatchSampler(corner_lesion, ["a"], (8, 10, 12), (8, 10, 12), batch_size=2)
    lower, upper = sampler.bounds((5, 6, 30))
    assert lower.tolist() == [-2, -2, 0] and upper.tolist() == [-1, -2, 18]
    # smaller than the patch by more than the margin: the shortfall wins over the margin
    sampler = PatchSampler(corner_lesion, ["a"], (12, 16, 16), (10, 14, 16), batch_size=2)
    lower, upper = sampler.bounds((4, 15, 40))
    assert lower.tolist() == [-4, -1, 0] and upper.tolist() == [-4, 0, 24]


@pytest.mark.parametrize("pad", [1, 2, 3, 4, 7, 33])
def test_bounds_equal_nnunets_rule_for_odd_and_even_padding(corner_lesion, pad):
    """Lowest start -ceil(pad / 2), highest image - patch + ceil(pad / 2), from nnU-Net's integer expressions."""
    patch, image = 40, 40 - pad
    sampler = PatchSampler(corner_lesion, ["a"], (patch, 8, 8), (patch, 8, 8), batch_size=2)
    lower, upper = sampler.bounds((image, 8, 8))
    assert lower[0] == - pad // 2  # Python binds the minus first: floor(-pad / 2)
    assert upper[0] == image + pad // 2 + pad % 2 - patch
