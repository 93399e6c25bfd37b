"""Model packages through their commands: export a tiny model, install it into a fresh results root and predict by
name (voxel for voxel the original model's prediction), the refusals that install nothing, and transfer from a
package (every strategy, a target planned with the package's plans and other labels)."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from covtransfer.cli import export_model, install_model, plan_and_preprocess, predict, train as train_cli
from covtransfer.config import Roots
from covtransfer.data.image_io import read_image
from covtransfer.evaluation.postprocessing import POSTPROCESSING_FILE
from covtransfer.models.package_format import FORMAT, MANIFEST, sha256_file
from covtransfer.network.checkpoint_io import load_checkpoint
from covtransfer.training.api import train
from covtransfer.training.strategies import make_strategy
from covtransfer.training.trainer import TrainingSettings
from cli_checks import refusal, root_flags
from tiny_data import FINGERPRINT_VOXELS, preprocessed_roots, write_raw_dataset

TARGET, SRC1, SRC2, OTHER_LABELS, OWN_PLANS = 1, 2, 3, 5, 6
TARGET_NAME = "Dataset001_Covid"
LICENCE = "CC BY-NC-SA 4.0"
TRANSFER = ("continual", "finetune", "encoder", "hybrid")


def settings() -> TrainingSettings:
    return TrainingSettings(epochs=1, iters_per_epoch=1, val_iters=0, device="cpu", save_every=1000,
                            final_validation=False, validation_tta="off")


def set_licence(roots: Roots, dataset: str, licence: str) -> None:
    for root in (roots.raw, roots.preprocessed):
        path = root / dataset / "dataset.json"
        content = json.loads(path.read_text())
        content.update(licence=licence, reference="Doe J., A tiny dataset, 2026")
        path.write_text(json.dumps(content))


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Roots:
    """A target (with a licence) and two sources without one, all with the target's plans, and two fold-runs of
    scratch on the target and a multi-lesion pre-training."""
    roots = preprocessed_roots(tmp_path_factory.mktemp("models"),
                               {TARGET: ("Covid", 4, 2), SRC1: ("Tumour", 2, 0), SRC2: ("Effusion", 2, 0)},
                               plans_from=TARGET)
    set_licence(roots, TARGET_NAME, LICENCE)
    for fold in (0, 1):
        train([TARGET], make_strategy("scratch"), fold, roots, settings())
    train([SRC1, SRC2], make_strategy("pretrain"), "all", roots, settings())
    return roots


@pytest.fixture(scope="module")
def package(roots, tmp_path_factory) -> Path:
    """The target's scratch model exported with the command's defaults."""
    output = tmp_path_factory.mktemp("package") / "covid.zip"
    assert export_model.main(["-d", str(TARGET), "-t", "scratch", "-o", str(output)] + root_flags(roots)) == 0
    return output


@pytest.fixture(scope="module")
def pretraining(roots, tmp_path_factory) -> Path:
    """The multi-lesion pre-training exported on purpose without a licence, with a citation file."""
    output = tmp_path_factory.mktemp("pretraining") / "lesions.zip"
    citation = output.with_name("cite.txt")
    citation.write_text("Roe R., Lesions everywhere, 2026\n")
    argv = ["-d", str(SRC1), str(SRC2), "-t", "pretrain", "-o", str(output), "--name", "lesions", "--license",
            "unknown", "--citation", str(citation)]
    assert export_model.main(argv + root_flags(roots)) == 0
    return output


def test_package_holds_manifest_plans_weights_only_licence_and_citation(roots, package):
    with zipfile.ZipFile(package) as archive:
        names = sorted(archive.namelist())
        manifest = json.loads(archive.read(MANIFEST))
        licence, citation = archive.read("LICENSE").decode(), archive.read("CITATION").decode()
    assert names == sorted(["CITATION", "LICENSE", MANIFEST, "dataset.json", "plans.json",
                            "fold_0/checkpoint_final.pt", "fold_1/checkpoint_final.pt"])
    assert manifest["format"] == FORMAT and manifest["name"] == f"{TARGET_NAME}_scratch"
    assert manifest["folds"] == ["0", "1"] and manifest["strategy"] == {"name": "scratch"}
    assert manifest["labels"] == {"background": 0, "lesion": 1} and manifest["network"]["kind"] == "unet"
    assert manifest["channels"]["0"]["name"] == "CT" and manifest["channels"]["0"]["normalization"]["scheme"] == "CT"
    assert manifest["training_datasets"] == [{"name": TARGET_NAME, "cases": 4, "licence": LICENCE,
                                              "reference": "Doe J., A tiny dataset, 2026"}]
    assert manifest["licence"] == LICENCE and manifest["pretrained_from"] is None
    assert set(manifest["metrics"]) == {"0", "1"} and manifest["metrics"]["0"]["epochs"] == 1
    assert LICENCE in licence and "NonCommercial" in licence and "Doe J., A tiny dataset, 2026" in citation
    plans = json.loads((roots.preprocessed / TARGET_NAME / "plans.json").read_text())
    assert manifest["target_spacing"] == plans["configurations"]["3d_fullres"]["spacing"]
    assert manifest["network"]["strides"] == plans["configurations"]["3d_fullres"]["strides"]
    original = load_checkpoint(roots.results / TARGET_NAME / "scratch" / "fold_0" / "checkpoint_final.pt")
    assert original.optimizer is not None


def test_install_verifies_every_checksum_and_keeps_weights_only(package, tmp_path, capsys):
    results = tmp_path / "results"
    capsys.readouterr()
    assert install_model.main([str(package), "--results", str(results)]) == 0
    printed = capsys.readouterr().out
    folder = results / "models" / f"{TARGET_NAME}_scratch"
    assert printed.count(f"licence: {LICENCE}") == 1 and "cite: " in printed
    manifest = json.loads((folder / MANIFEST).read_text())
    assert all(sha256_file(folder / member) == digest for member, digest in manifest["files"].items())
    checkpoint = load_checkpoint(folder / "fold_1" / "checkpoint_final.pt")
    assert checkpoint.optimizer is None and checkpoint.rng is None and checkpoint.history == []
    assert install_model.main(["--list", "--results", str(results)]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith(f"{TARGET_NAME}_scratch: scratch, folds 0, 1; labels background 0, lesion 1; licence "
                             f"{LICENCE}; trained on {TARGET_NAME}; from {package.resolve()}")


def predicted(argv: list[str], output: Path) -> dict[str, np.ndarray]:
    assert predict.main(argv + ["-o", str(output), "--device", "cpu", "--quiet"]) == 0
    return {p.name: read_image(p)[0] for p in sorted(output.glob("*.nii.gz"))}


def test_a_model_installed_elsewhere_predicts_by_name_exactly_as_the_original(roots, package, tmp_path):
    results = tmp_path / "fresh_results"
    assert install_model.main([str(package), "--results", str(results), "--name", "covid"]) == 0
    images = ["-i", str(roots.raw / TARGET_NAME / "imagesTs")]
    original = predicted(images + ["-d", str(TARGET), "-t", "scratch"] + root_flags(roots), tmp_path / "original")
    by_name = predicted(images + ["-m", "covid", "--results", str(results)], tmp_path / "by_name")
    from_zip = predicted(images + ["-m", str(package), "--results", str(results), "--fast"], tmp_path / "zip")
    fast = predicted(images + ["-d", str(TARGET), "-t", "scratch", "--fast"] + root_flags(roots), tmp_path / "fast")
    assert list(original) == ["covid_ts000.nii.gz", "covid_ts001.nii.gz"]
    for case in original:
        np.testing.assert_array_equal(by_name[case], original[case])
        np.testing.assert_array_equal(from_zip[case], fast[case])


def test_the_runs_postprocessing_rules_travel_with_the_package(roots, tmp_path, capsys):
    run = roots.results / TARGET_NAME / "scratch"
    shutil.copytree(run, run.with_name("scratch__rules"))
    rules = {"largest_component_foreground": True, "largest_component_labels": [], "connectivity": 26, "labels": [1]}
    (run.with_name("scratch__rules") / POSTPROCESSING_FILE).write_text(json.dumps(rules))
    output = tmp_path / "ruled.zip"
    capsys.readouterr()
    assert export_model.main(["-d", str(TARGET), "-t", "scratch", "--tag", "rules", "-o", str(output)]
                             + root_flags(roots)) == 0
    assert "post-processing rules" in capsys.readouterr().out
    results = tmp_path / "results"
    assert install_model.main([str(output), "--results", str(results), "--name", "ruled"]) == 0
    assert json.loads((results / "models" / "ruled" / POSTPROCESSING_FILE).read_text()) == rules
    images = ["-i", str(roots.raw / TARGET_NAME / "imagesTs"), "--postprocess"]
    original = predicted(images + ["-d", str(TARGET), "-t", "scratch", "--tag", "rules"] + root_flags(roots),
                         tmp_path / "original")
    installed = predicted(images + ["-m", "ruled", "--results", str(results)], tmp_path / "installed")
    for case in original:
        np.testing.assert_array_equal(installed[case], original[case])


def test_a_package_without_rules_refuses_postprocess_and_bad_rules_are_not_packaged(roots, package, tmp_path,
                                                                                     capsys):
    results = tmp_path / "results"
    assert install_model.main([str(package), "--results", str(results), "--name", "plain"]) == 0
    refusal(predict.main, ["-i", str(roots.raw / TARGET_NAME / "imagesTs"), "-o", str(tmp_path / "out"), "-m",
                           "plain", "--results", str(results), "--postprocess"], capsys, POSTPROCESSING_FILE)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"largest_component_foreground": "yes"}))
    output = tmp_path / "bad.zip"
    argv = ["-d", str(TARGET), "-t", "scratch", "-o", str(output), "--postprocessing", str(bad)] + root_flags(roots)
    refusal(export_model.main, argv, capsys, f"{bad}: 'largest_component_foreground' must be true or false")
    missing = argv[:-len(root_flags(roots)) - 1] + [str(tmp_path / "none.json")] + root_flags(roots)
    refusal(export_model.main, missing, capsys, "no such post-processing rules file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "results"]


def damaged_copy(package: Path, folder: Path, member: str | None = None, extra: zipfile.ZipInfo | None = None,
                 listed: bool = True) -> Path:
    """A copy of ``package`` with one byte of ``member`` flipped, or with an ``extra`` member (listed in the
    manifest with its true checksum when ``listed``)."""
    copy = folder / "altered.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(copy, "w") as target:
        manifest = json.loads(source.read(MANIFEST))
        if extra is not None and listed:
            manifest["files"][extra.filename] = hashlib.sha256(b"x").hexdigest()
        for info in source.infolist():
            data = source.read(info) if info.filename != MANIFEST else json.dumps(manifest).encode()
            target.writestr(info.filename, data, compress_type=info.compress_type)
        if extra is not None:
            target.writestr(extra, b"x")
    if member is not None:
        with zipfile.ZipFile(copy) as archive:
            info = archive.getinfo(member)
        content = bytearray(copy.read_bytes())
        content[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0x01
        copy.write_bytes(bytes(content))
    return copy


def symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("case, message", [
    ("flipped byte", "fold_0/checkpoint_final.pt is damaged"),
    ("zip-slip", "member '../evil.txt' leaves the package folder"),
    ("absolute", "member '/tmp/evil.txt' has an absolute path"),
    ("symlink", "member 'fold_0/link' is a symbolic link"),
    ("unlisted", "holds notes.txt, which its manifest does not list"),
    ("foreign zip", "not a covtransfer model package (a zip without manifest.json)"),
    ("not a zip", "not a model package (not a complete zip archive"),
])
def test_a_damaged_tampered_or_foreign_package_is_refused_in_one_line_and_nothing_installed(package, tmp_path,
                                                                                         capsys, case, message):
    if case == "flipped byte":
        bad = damaged_copy(package, tmp_path, member="fold_0/checkpoint_final.pt")
    elif case in ("zip-slip", "absolute"):
        bad = damaged_copy(package, tmp_path, extra=zipfile.ZipInfo("../evil.txt" if case == "zip-slip"
                                                                    else "/tmp/evil.txt"))
    elif case == "symlink":
        bad = damaged_copy(package, tmp_path, extra=symlink_member("fold_0/link"))
    elif case == "unlisted":
        bad = damaged_copy(package, tmp_path, extra=zipfile.ZipInfo("notes.txt"), listed=False)
    elif case == "foreign zip":
        bad = tmp_path / "photos.zip"
        with zipfile.ZipFile(bad, "w") as archive:
            archive.writestr("photo.txt", "hello")
    else:
        bad = tmp_path / "model.zip"
        bad.write_text("{}")
    results = tmp_path / "results"
    line = refusal(install_model.main, [str(bad), "--results", str(results)], capsys, message)
    assert line.startswith(f"error: {bad}: ")
    assert not results.exists() and not (tmp_path.parent / "evil.txt").exists()


def test_installing_a_name_twice_needs_overwrite(package, tmp_path, capsys):
    results = ["--results", str(tmp_path / "results")]
    assert install_model.main([str(package)] + results) == 0
    folder = tmp_path / "results" / "models" / f"{TARGET_NAME}_scratch"
    refusal(install_model.main, [str(package)] + results, capsys, f"{folder}: a model named {folder.name} is already "
            "installed; pass --overwrite")
    (folder / "fold_0" / "checkpoint_final.pt").write_bytes(b"broken")
    assert install_model.main([str(package), "--overwrite"] + results) == 0
    assert load_checkpoint(folder / "fold_0" / "checkpoint_final.pt").epoch == 1
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_export_without_a_licence_is_refused_unless_unknown_is_said(roots, pretraining, tmp_path, capsys):
    output = tmp_path / "lesions.zip"
    argv = ["-d", str(SRC1), str(SRC2), "-t", "pretrain", "-o", str(output)] + root_flags(roots)
    refusal(export_model.main, argv, capsys, "no licence stated for Dataset002_Tumour, Dataset003_Effusion")
    assert not output.exists() and not list(tmp_path.iterdir())
    refusal(export_model.main, argv[:-6] + ["-o", str(tmp_path / "x.tar")] + root_flags(roots), capsys,
            "is a .zip file")
    refusal(export_model.main, ["-d", str(TARGET), "-t", "scratch", "-f", "3", "-o", str(output)] + root_flags(roots),
            capsys, "fold_3/checkpoint_final.pt: not found; finished folds: 0, 1")
    manifest = json.loads(zipfile.ZipFile(pretraining).read(MANIFEST))
    assert manifest["licence"] == "unknown" and manifest["folds"] == ["all"]
    assert zipfile.ZipFile(pretraining).read("CITATION") == b"Roe R., Lesions everywhere, 2026\n"
    assert [d["name"] for d in manifest["training_datasets"]] == ["Dataset002_Tumour", "Dataset003_Effusion"]


# ------------------------------------------------------------------------------------------- transfer
@pytest.mark.parametrize("strategy", TRANSFER)
def test_every_strategy_transfers_from_a_package(roots, pretraining, strategy):
    folder = train([TARGET], make_strategy(strategy), 0, roots, settings(), pretrained=str(pretraining),
                   tag="from_package")
    report = json.loads((folder / "load_report.json").read_text())
    assert report["source"] == str(pretraining) and report["loaded"]
    assert report["origin"]["kind"] == "model package" and report["origin"]["name"] == "lesions"
    assert list(report["reinitialised"]) == [f"heads.{TARGET_NAME}"]
    assert load_checkpoint(folder / "checkpoint_final.pt").kind == ("hybrid" if strategy == "hybrid" else "unet")


def test_a_transferred_model_exports_its_pretraining_and_inherits_its_licence(roots, pretraining, tmp_path):
    train([TARGET], make_strategy("hybrid"), 0, roots, settings(), pretrained=str(pretraining), tag="shared")
    output = tmp_path / "hybrid.zip"
    assert export_model.main(["-d", str(TARGET), "-t", "hybrid", "--tag", "shared", "-o", str(output)]
                             + root_flags(roots)) == 0
    with zipfile.ZipFile(output) as archive:
        manifest = json.loads(archive.read(MANIFEST))
        licence = archive.read("LICENSE").decode()
    assert manifest["name"] == f"{TARGET_NAME}_hybrid__shared" and manifest["network"]["kind"] == "hybrid"
    assert manifest["pretrained_from"]["name"] == "lesions" and manifest["licence"] == f"{LICENCE}; unknown"
    assert f"Transferred from the pre-trained model {pretraining} (lesions)" in licence


def test_predicting_with_a_name_that_is_not_installed_lists_the_installed_models(roots, package, tmp_path, capsys):
    results = tmp_path / "results"
    assert install_model.main([str(package), "--results", str(results), "--name", "covid"]) == 0
    refusal(predict.main, ["-m", "covd", "-i", str(roots.raw / TARGET_NAME / "imagesTs"), "-o", str(tmp_path / "o"),
                           "--results", str(results)], capsys,
            f"covd: no such file or folder, nor a model installed in {results / 'models'} (installed: covid;")
    assert not (tmp_path / "o").exists()


def test_a_target_with_other_labels_is_planned_from_the_package_and_its_heads_reinitialised(roots, pretraining,
                                                                                           tmp_path, capsys):
    name = "Dataset005_Lobes"
    write_raw_dataset(roots.raw, OTHER_LABELS, "Lobes", 2, seed=OTHER_LABELS, shape=(12, 40, 24))
    info = json.loads((roots.raw / name / "dataset.json").read_text())
    info["labels"] = {"background": 0, "lesion": 1, "vessel": 2}
    (roots.raw / name / "dataset.json").write_text(json.dumps(info))
    results = tmp_path / "results"
    assert install_model.main([str(pretraining), "--results", str(results)]) == 0
    here = ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(results)]
    assert plan_and_preprocess.main(["-d", str(OTHER_LABELS), "--plans-from", "lesions", "-np", "1",
                                     "--fingerprint-voxels", str(FINGERPRINT_VOXELS)] + here) == 0
    assert "(plans from model lesions)" in capsys.readouterr().out
    capsys.readouterr()
    assert train_cli.main(["-d", str(OTHER_LABELS), "-t", "continual", "--pretrained", "lesions", "--epochs", "1",
                           "--iters-per-epoch", "1", "--val-iters", "0", "--no-final-validation", "--device", "cpu"]
                          + here) == 0
    log = capsys.readouterr().out
    folder = results / name / "continual" / "fold_0"
    report = json.loads((folder / "load_report.json").read_text())
    assert report["reinitialised"] == {f"heads.{name}": "3 classes of the target's labels; the pre-trained heads "
                                       "(Dataset002_Tumour: background, lesion, Dataset003_Effusion: background, "
                                       "lesion) are not loaded"}
    assert [line for line in log.splitlines() if "re-initialised" in line] == \
        [line for line in log.splitlines() if line.startswith("loaded ")]


def test_a_package_planned_differently_from_the_target_is_refused_naming_plans_from(roots, pretraining, capsys):
    write_raw_dataset(roots.raw, OWN_PLANS, "Own", 2, seed=OWN_PLANS, shape=(12, 40, 24))
    assert plan_and_preprocess.main(["-d", str(OWN_PLANS), "--preset", "cpu", "-np", "1", "--fingerprint-voxels",
                                     str(FINGERPRINT_VOXELS)] + root_flags(roots)) == 0
    before = sorted(roots.results.rglob("*"))
    line = refusal(train_cli.main, ["-d", str(OWN_PLANS), "-t", "encoder", "--pretrained", str(pretraining)]
                   + root_flags(roots), capsys, "differs from")
    assert line.endswith(f"plan Dataset006_Own with the package's plans (covtransfer_plan_and_preprocess -d "
                         f"Dataset006_Own --plans-from {pretraining}) and train again")
    assert sorted(roots.results.rglob("*")) == before


def test_a_package_of_several_folds_or_a_finished_strategy_is_refused_as_a_pretraining(roots, package, capsys):
    refusal(train_cli.main, ["-d", str(TARGET), "-t", "continual", "--pretrained", str(package)] + root_flags(roots),
            capsys, "holds 2 folds (0, 1); transfer starts from one")
    hybrid = train([TARGET], make_strategy("hybrid"), 0, roots, settings(),
                   pretrained=roots.results / "Pretrain__Dataset002_Tumour__Dataset003_Effusion" / "pretrain" /
                   "fold_all", tag="finished")
    refusal(train_cli.main, ["-d", str(TARGET), "-t", "hybrid", "-f", "1", "--pretrained", str(hybrid)]
            + root_flags(roots), capsys, "a finished -t hybrid model, a hybrid network (a dedicated and an adapted "
            "encoder joined by fusion units), not a pre-trained U-Net; -t hybrid starts from a U-Net checkpoint")
    dataset_json = roots.results / TARGET_NAME / "scratch" / "dataset.json"
    refusal(train_cli.main, ["-d", str(TARGET), "-t", "hybrid", "-f", "1", "--pretrained", str(dataset_json)]
            + root_flags(roots), capsys, f"{dataset_json}: not a checkpoint but a JSON file")
    assert not (roots.results / TARGET_NAME / "hybrid" / "fold_1").exists()
