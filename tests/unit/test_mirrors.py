"""Where the harness looks for the data and model mirrors when no variable names them: the
`shared/` folder beside the clone, as README says (a new shell finds ../shared by itself)."""

from harness.protocol import mirrors
from paths import REPO


def test_the_fallback_mirrors_are_beside_the_repository():
    assert mirrors.CLONE == REPO
    assert mirrors.BESIDE_CLONE == {"HARNESS_DATA_DIR": REPO.parent / "shared" / "data",
                                    "HARNESS_MODEL_DIR": REPO.parent / "shared" / "models"}
