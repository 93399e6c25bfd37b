"""Synthetic chest-CT phantoms: HU of the regions, lesion models, determinism, dataset layout, atomicity, CLI."""

import json

import numpy as np
import pytest
from scipy import ndimage

from covtransfer.cli import make_synthetic
from covtransfer.data.dataset_json import list_cases, load_dataset_json
from covtransfer.data.image_io import read_image
from covtransfer.datasets import synthetic
from covtransfer.datasets.phantom import SIZES
from covtransfer.datasets.synthetic import KINDS, case_rng, generate_case, make_synthetic_dataset
from covtransfer.errors import CovtransferError
from cli_checks import refusal

# Expected HU of the lesion core per kind (model range widened by noise and partial volume at tiny spacing).
LESION_HU = {"covid": (-750, -50), "tumor": (-25, 85), "effusion": (-25, 45)}


def _cases(kind, n=6, seed=11, size="tiny"):
    return [generate_case(kind, size, case_rng(seed, kind, i), with_lungs=True) for i in range(n)]


def _core(mask):
    core = ndimage.binary_erosion(mask)
    return core if core.any() else mask


@pytest.mark.parametrize("kind", KINDS)
def test_regions_have_ct_intensities(kind):
    for image, label, spacing in _cases(kind):
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert set(np.unique(label)) == {0, 1, 2}
        corner = image[:, :3, :3].astype(float)
        assert -1010 < corner.mean() < -985 and 8 < corner.std() < 30  # air with CT noise, clipped at -1024
        assert -900 < np.median(image[_core(label == 1)]) < -780  # aerated lung parenchyma
        low, high = LESION_HU[kind]
        assert low < np.median(image[_core(label == 2)]) < high
        body = (image > -500) & (label == 0)
        assert -120 < np.median(image[body]) < 80  # fat and soft tissue
        assert ((image > -130) & (image < -70) & body).sum() > 0.03 * body.sum()  # a fat layer exists
        assert image.max() > 400  # ribs / spine


def test_lesion_models_differ_in_place_and_contrast():
    ratios = {}
    for kind in KINDS:
        ratios[kind] = []
        for image, label, spacing in _cases(kind, n=6, seed=3):
            lung, lesion = label >= 1, label == 2
            depth = ndimage.distance_transform_edt(lung, sampling=spacing)
            ratios[kind].append(np.median(depth[lesion]) / np.median(depth[lung]))
            ring = ndimage.binary_dilation(lesion) & ~lesion
            centre_shift = np.argwhere(lesion).mean(0) - np.argwhere(label == 1).mean(0)
            if kind == "tumor":
                assert (label[ring] == 1).mean() > 0.6  # a mass surrounded by lung
            if kind == "effusion":
                assert centre_shift[0] < 0 and centre_shift[1] > 0  # dependent: inferior and posterior
                assert (label[ring] == 1).mean() < 0.5  # against the chest wall
    assert np.mean(ratios["covid"]) < 1.0 < np.mean(ratios["tumor"])  # opacities peripheral, masses deeper


@pytest.mark.parametrize("kind", KINDS)
def test_labels_binary_and_present_without_lungs(kind):
    for i in range(8):
        image, label, spacing = generate_case(kind, "tiny", case_rng(5, kind, i))
        assert set(np.unique(label)) == {0, 1}
        assert label.sum() >= 20
        assert image.shape == label.shape


def test_grid_ranges_follow_the_size():
    for size in ("tiny", "small"):
        spec = SIZES[size]
        image, label, spacing = generate_case("covid", size, np.random.default_rng(2))
        nz, ny, nx = image.shape
        assert spec.slices[0] <= nz <= spec.slices[1] and spec.columns[0] <= nx <= spec.columns[1]
        assert spec.rows[0] <= ny <= spec.rows[1]
        assert spec.slice_spacing[0] <= spacing[0] <= spec.slice_spacing[1]
        assert spacing[1] == spacing[2] and spec.inplane_spacing[0] <= spacing[1] <= spec.inplane_spacing[1]


def test_same_seed_same_voxels_other_seed_differs():
    a = generate_case("effusion", "tiny", case_rng(7, "effusion", 2))
    b = generate_case("effusion", "tiny", case_rng(7, "effusion", 2))
    c = generate_case("effusion", "tiny", case_rng(8, "effusion", 2))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes() and a[2] == b[2]
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])
    other_kind = generate_case("covid", "tiny", case_rng(7, "covid", 2))
    assert a[0].shape != other_kind[0].shape or not np.array_equal(a[0], other_kind[0])


def test_unknown_kind_or_size_is_a_user_error():
    with pytest.raises(CovtransferError, match="kind"):
        generate_case("pneumothorax", "tiny", np.random.default_rng(0))
    with pytest.raises(CovtransferError, match="size"):
        generate_case("covid", "huge", np.random.default_rng(0))


def test_dataset_layout_json_and_reproducible_files(tmp_path):
    folder = make_synthetic_dataset("covid", 5, 3, n_test=2, seed=4, raw_root=tmp_path)
    assert folder == tmp_path / "Dataset005_SyntheticCOVID"
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "labelsTs"]
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"covid_00{i}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["covid_003.nii.gz", "covid_004.nii.gz"]
    info = load_dataset_json(folder)
    assert info.name == "SyntheticCOVID" and info.num_training == 3 and info.file_ending == ".nii.gz"
    assert info.channel_names == {0: "CT"} and info.labels == {"background": 0, "lesion": 1}
    assert "synthetic" in info.extra["description"].lower() and "covid" in info.extra["description"]
    assert info.extra["licence"] == "CC0-1.0"  # so that a model trained on phantoms exports without --license
    assert info.extra["synthetic"] == {"kind": "covid", "seed": 4, "size": "tiny", "with_lungs": False}
    cases = list_cases(folder, info, "Tr")
    assert [c.case_id for c in cases] == ["covid_000", "covid_001", "covid_002"]
    image, geometry = read_image(cases[1].images[0])
    label, label_geometry = read_image(cases[1].label)
    expected = generate_case("covid", "tiny", case_rng(4, "covid", 1))
    assert np.array_equal(image, expected[0]) and np.array_equal(label, expected[1])
    assert np.allclose(geometry.spacing, expected[2], rtol=1e-6) and geometry.matches(label_geometry)
    origins = {read_image(c.images[0])[1].origin for c in cases}
    assert len(origins) == 3  # the origin varies per case

    again = make_synthetic_dataset("covid", 6, 3, n_test=2, seed=4, raw_root=tmp_path, name="Copy")
    for sub in ("imagesTr", "labelsTs"):
        for path in (folder / sub).iterdir():
            assert np.array_equal(read_image(path)[0], read_image(again / sub / path.name)[0])


def test_with_lungs_declares_three_labels(tmp_path):
    folder = make_synthetic_dataset("tumor", 8, 1, raw_root=tmp_path, with_lungs=True)
    assert json.loads((folder / "dataset.json").read_text())["labels"] == {"background": 0, "lung": 1, "lesion": 2}
    label, _ = read_image(folder / "labelsTr" / "tumor_000.nii.gz")
    assert set(np.unique(label)) == {0, 1, 2}
    assert not (folder / "imagesTs").exists()


def test_refuses_existing_folder_or_taken_id_and_overwrites_on_request(tmp_path):
    folder = make_synthetic_dataset("effusion", 9, 1, seed=1, raw_root=tmp_path)
    before = read_image(folder / "imagesTr" / "effusion_000_0000.nii.gz")[0]
    with pytest.raises(CovtransferError, match="already exists"):
        make_synthetic_dataset("effusion", 9, 1, seed=2, raw_root=tmp_path)
    with pytest.raises(CovtransferError, match="already taken"):
        make_synthetic_dataset("covid", 9, 1, raw_root=tmp_path)
    make_synthetic_dataset("effusion", 9, 2, seed=2, raw_root=tmp_path, overwrite=True)
    after = read_image(folder / "imagesTr" / "effusion_000_0000.nii.gz")[0]
    assert load_dataset_json(folder).num_training == 2
    assert before.shape != after.shape or not np.array_equal(before, after)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_write = synthetic.write_image

    def failing_write(path, array, geometry):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(path, array, geometry)

    monkeypatch.setattr(synthetic, "write_image", failing_write)
    with pytest.raises(OSError, match="disk full"):
        make_synthetic_dataset("covid", 10, 4, raw_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [dict(n_train=0), dict(n_test=-1), dict(seed=-3), dict(kind="flu"),
                                 dict(dataset_id=1000), dict(name="no spaces")])
def test_bad_arguments_are_user_errors(tmp_path, bad):
    arguments = dict(kind="covid", dataset_id=1, n_train=1, raw_root=tmp_path) | bad
    with pytest.raises(CovtransferError):
        make_synthetic_dataset(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_dataset_and_reports_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COVTRANSFER_RAW", str(tmp_path / "env_root"))
    argv = ["tumor", "-d", "12", "-n", "2", "--test", "1", "--size", "tiny", "--seed", "3", "--name", "Masses",
            "--raw", str(tmp_path)]
    assert make_synthetic.main(argv) == 0
    folder = tmp_path / "Dataset012_Masses"
    assert "Dataset012_Masses" in capsys.readouterr().out
    info = load_dataset_json(folder)
    assert info.num_training == 2 and info.extra["synthetic"]["seed"] == 3
    assert [p.name for p in (folder / "imagesTs").iterdir()] == ["tumor_002_0000.nii.gz"]
    assert not (tmp_path / "env_root").exists()
    with pytest.raises(CovtransferError, match="already exists"):
        make_synthetic.main(argv)
    error = refusal(make_synthetic.main, argv, capsys, "already exists")
    assert error.endswith("already exists; pass --overwrite to replace it")  # the flag, not the API's keyword
    assert make_synthetic.main(argv + ["--overwrite", "--with-lungs"]) == 0
    assert load_dataset_json(folder).labels["lung"] == 1
    assert make_synthetic.main(argv + ["--overwrite"]) == 0
    assert "lung" not in load_dataset_json(folder).labels
    assert make_synthetic.main(argv + ["--overwrite", "--labels", "lung-lesion"]) == 0
    assert load_dataset_json(folder).labels == {"background": 0, "lung": 1, "lesion": 2}
    with pytest.raises(SystemExit):
        make_synthetic.main(["flu", "-d", "1", "-n", "1"])


def test_cli_uses_environment_root_and_default_name(tmp_path, monkeypatch):
    monkeypatch.setenv("COVTRANSFER_RAW", str(tmp_path))
    assert make_synthetic.main(["effusion", "-d", "3", "-n", "1", "--size", "tiny"]) == 0
    assert (tmp_path / "Dataset003_SyntheticEffusion" / "labelsTr" / "effusion_000.nii.gz").is_file()
