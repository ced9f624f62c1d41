"""Each of the article's defects: its literal code fails, the suite's correction works."""
import re

import pytest

from suite.cases.defects import CASES as DEFECTS


@pytest.fixture(params=DEFECTS.names())
def defect(request):
    return DEFECTS.get(request.param)


def test_every_defect_shows_either_an_error_or_a_symptom(defect):
    assert (defect.raises is None) != (defect.symptom is None)


def test_the_articles_literal_code_fails(defect, tmp_path):
    if defect.raises is not None:
        with pytest.raises(defect.raises, match=defect.match):
            defect.literal(tmp_path)
    else:
        observed = defect.literal(tmp_path)
        assert defect.symptom(observed), f"{defect.name}: literal code did not show the defect: {observed!r}"


def test_the_correction_works(defect, tmp_path):
    observed = defect.corrected(tmp_path)  # the ones that raise: it must not
    assert defect.correction_works(observed), f"{defect.name}: the correction does not work: {observed!r}"


def test_the_speech_clip_length_matters_to_the_speech_model(tmp_path):
    """The article's 0.2 s gives the MFCC front end 2 frames; the loader's 1 s gives the 10 that
    SpeechNet's fc1 (64 x 6 x 6 after two 3x3 convolutions) needs."""
    speech = DEFECTS.get("speech_clip_length")
    assert speech.literal(tmp_path / "literal") == [(1, 10, 2)]
    assert speech.corrected(tmp_path / "corrected") == [(1, 10, 10)]


def test_design_lists_no_defect_that_is_not_declared():
    expected = {"mnist_fc1_input_size", "mnist_net_recreated_each_step", "mnist_no_totensor",
                "cross_entropy_loss_missing", "speech_fc1_needs_10x10", "speech_clip_length",
                "librosa_calls_missing", "variable_deprecated"}
    assert set(DEFECTS.names()) == expected


def test_the_defect_table_names_every_defect():
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "defects.md").read_text()  # README links it
    missing = [d.name for d in DEFECTS if not re.search(rf"`{d.name}`", page)]
    assert not missing, f"docs/defects.md's defect table lacks {missing}"
