"""Reply texts: confident, unsure, below the threshold, for any number of classes."""
import pytest

from bot import messages
from model import Prediction

CLASSES = ["kurti", "saree", "shirt"]


def prediction(*pairs):
    return Prediction(label=pairs[0][0], confidence=pairs[0][1], top=tuple(pairs))


def test_confident_answer_is_name_and_percent():
    text = messages.answer_text(prediction(("saree", 0.934), ("kurti", 0.05), ("shirt", 0.016)), CLASSES, 0.6, 0.8)
    assert text == "Saree (93%)"


def test_between_thresholds_shows_other_guesses():
    text = messages.answer_text(prediction(("saree", 0.7), ("kurti", 0.2), ("shirt", 0.1)), CLASSES, 0.6, 0.8)
    assert text.startswith("Saree (70%)")
    assert "kurti 20%" in text and "shirt 10%" in text


def test_below_threshold_is_honest():
    text = messages.answer_text(prediction(("shirt", 0.41), ("saree", 0.35), ("kurti", 0.24)), CLASSES, 0.6, 0.8)
    assert text.startswith("I'm not sure this is a kurti, a saree or a shirt.")
    assert "shirt 41%, saree 35%, kurti 24%" in text


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["kurti"], "a kurti"),
        (["kurti", "anarkali"], "a kurti or an anarkali"),
        (["a", "b", "c", "d"], "an a, a b, a c or a d"),
        ([], "anything I know"),
    ],
)
def test_either_of_any_number_of_classes(names, expected):
    assert messages.either_of(names) == expected


def test_single_class_model_answer_has_no_empty_guess_list():
    text = messages.answer_text(prediction(("kurti", 0.7)), ["kurti"], 0.6, 0.8)
    assert text == "Kurti (70%)"


def test_help_lists_classes_limits_and_group_usage():
    text = messages.help_text(["kurti", "saree", "t_shirt"], "ProductIdBot", 0.6)
    assert "kurti, saree, t shirt" in text
    assert "60%" in text and "20 MB" in text and "/why" in text
    assert "@ProductIdBot" in text and "/help@ProductIdBot" in text
    assert "An album gets one answer" in text


def test_help_says_whether_feedback_is_stored():
    assert "stored to improve" in messages.help_text(CLASSES, "B", 0.6, feedback_stored=True)
    assert "stored to improve" not in messages.help_text(CLASSES, "B", 0.6, feedback_stored=False)


def test_why_captions_explain_the_colours():
    rough = messages.why_caption("saree", 0.9, 56, final=False)
    final = messages.why_caption("saree", 0.9, 16, final=True)
    assert "finer one" in rough and "finer one" not in final
    for caption in (rough, final):
        assert "Red" in caption and "Saree (90%)" in caption
        assert len(caption) <= 1024  # Telegram's caption limit


def test_help_says_how_long_the_journal_keeps_messages():
    assert "kept for about 24 hours" in messages.help_text(CLASSES, "B", 0.6, journal_hours=24.0)
    assert "kept for about 6 hours" in messages.help_text(CLASSES, "B", 0.6, feedback_stored=True, journal_hours=6)
