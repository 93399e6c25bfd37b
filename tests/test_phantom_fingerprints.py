"""The phantoms are bit-identical for the same seed: sha256 prefixes of image and label arrays recorded from the
generator before it was split into anatomy, lesions and rendering."""

import hashlib

import numpy as np
import pytest

from covtransfer.datasets.phantom import generate_case

FINGERPRINTS = {
    "covid/tiny/0/lesion": ("0920f40fa4827518095126e2", "db840c9b77bc99c35061f98d"),
    "covid/tiny/0/lungs": ("0920f40fa4827518095126e2", "9dbcbad01c72f6d49b1e0754"),
    "covid/tiny/1/lesion": ("ddff7f2fe65c765c535ba98e", "72249d2e7fa78bd1771ddd48"),
    "covid/tiny/1/lungs": ("ddff7f2fe65c765c535ba98e", "cadc16cad310a11d7c1c3607"),
    "covid/tiny/2/lesion": ("89a79400177d547979155114", "942aa0560bdbbfb9eef4f255"),
    "covid/tiny/2/lungs": ("89a79400177d547979155114", "c683654460d2ad186b9bff8c"),
    "covid/small/3/lesion": ("66416820356281c9dad8a9d7", "a31551178cd9d66e338229c2"),
    "tumor/tiny/0/lesion": ("79803b93923986c4feea1c2d", "d8b8a88e4aa6384bfce01b75"),
    "tumor/tiny/0/lungs": ("79803b93923986c4feea1c2d", "2e1f2f30f668be39bb615150"),
    "tumor/tiny/1/lesion": ("5331eba009a3856398564c0c", "c380f88f801b50aecdedd0c5"),
    "tumor/tiny/1/lungs": ("5331eba009a3856398564c0c", "f5d84512c9bd6f484eb2d15d"),
    "tumor/tiny/2/lesion": ("d9bc6642b54f2ed7ae303118", "5e2a40918064f1f3abc1cb1a"),
    "tumor/tiny/2/lungs": ("d9bc6642b54f2ed7ae303118", "ed46948c6adb701cfc8d31e8"),
    "tumor/small/3/lesion": ("dc8932e8a0edbcda72b87566", "4e2304cb24daaf92ae654dc1"),
    "effusion/tiny/0/lesion": ("3bb471fcead4feb5d6d4a3e4", "0cf159582e6cb10e1d942b18"),
    "effusion/tiny/0/lungs": ("3bb471fcead4feb5d6d4a3e4", "57250af30578fb283ddfa1f9"),
    "effusion/tiny/1/lesion": ("8a6543ae302481aa8de230c0", "0fea79a6c22cfbb1edd479ad"),
    "effusion/tiny/1/lungs": ("8a6543ae302481aa8de230c0", "0cbfd2f97d7d803d94442f83"),
    "effusion/tiny/2/lesion": ("1139beb273a69e68c2e61f2f", "7a2aac22752215ef4e688fe3"),
    "effusion/tiny/2/lungs": ("1139beb273a69e68c2e61f2f", "7529dae0f87196ea1a19289c"),
    "effusion/small/3/lesion": ("6e7e5d31fe8f3ef0acadd5d7", "896b7e7d95163549beb1e160"),
}


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()[:24]


@pytest.mark.parametrize("key", list(FINGERPRINTS))
def test_phantom_matches_its_recorded_fingerprint(key):
    kind, size, seed, labels = key.split("/")
    image, label, _ = generate_case(kind, size, np.random.default_rng(int(seed)), with_lungs=labels == "lungs")
    assert (_sha(image), _sha(label)) == FINGERPRINTS[key]
