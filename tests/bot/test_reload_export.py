"""A reload on a bot serving an export: to a checkpoint whose export is missing (a stale one beside it), the
torch engine serves it where torch is installed, with the reason logged; where torch is not installed, the
reload is refused with a line that says what to do, and the export keeps serving. A cluster replica loads the
same way (model.serve.replica.load_replica_engine)."""
from __future__ import annotations

import logging
import shutil
import sys

import pytest
from e2e_support import assert_prediction, expected_prediction

from bot.inference.reload import reload_model
from devtools.samples import jpeg
from model import load_classifier
from model.export_manifest import export_dir
from model.openvino_engine import OpenVINOEngine

pytestmark = pytest.mark.timeout(300)


def served_copy(exported_checkpoint, tmp_path):
    served = tmp_path / "model.pt"
    shutil.copy(exported_checkpoint, served)
    shutil.copytree(export_dir(exported_checkpoint), export_dir(served))
    return served


async def test_a_reload_to_a_checkpoint_without_export_uses_torch_and_says_why(
        fake_api, running_bot, exported_checkpoint, four_class_checkpoint, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bot.inference.checkpoints")
    served = served_copy(exported_checkpoint, tmp_path)
    async with running_bot(CHECKPOINT_PATH=str(served), RUNTIME="auto", DEVICE="cpu", PRECISION="fp32",
                           own_classifier=True) as app:
        assert isinstance(app.bot_data["services"].inference.classifier, OpenVINOEngine)
        shutil.copy(four_class_checkpoint, served)  # the old export stays beside it: stale
        result = await reload_model(app, "test")
        assert result.ok and "now serving" in result.text, result.text
        assert "stale" in caplog.text and "served by torch" in caplog.text
        update = await fake_api.push(fake_api.photo_update(jpeg(seed=7)))
        assert_prediction(await fake_api.wait_for_answer(update["message"], timeout=60),
                          expected_prediction(load_classifier(four_class_checkpoint), jpeg(seed=7)))


async def test_without_torch_that_reload_is_refused_and_the_export_keeps_serving(
        fake_api, running_bot, exported_checkpoint, four_class_checkpoint, tmp_path, monkeypatch):
    served = served_copy(exported_checkpoint, tmp_path)
    async with running_bot(CHECKPOINT_PATH=str(served), RUNTIME="auto", DEVICE="cpu", PRECISION="fp32",
                           own_classifier=True) as app:
        shutil.copy(four_class_checkpoint, served)
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "torch", None)  # importlib.util.find_spec("torch") is None: "not installed"
            result = await reload_model(app, "test")
        assert not result.ok and "refused" in result.text and "torch is not installed" in result.text, result.text
        assert "python -m model export --checkpoint" in result.text
        update = await fake_api.push(fake_api.photo_update(jpeg(seed=8)))
        answer = await fake_api.wait_for_answer(update["message"], timeout=60)
        assert answer.ok and "lehenga" not in answer.text.lower()
        assert isinstance(app.bot_data["services"].inference.classifier, OpenVINOEngine)


def test_a_replica_serves_the_export_and_falls_back_to_torch(exported_checkpoint, four_class_checkpoint):
    from model.serve.replica import load_replica_engine

    engine = load_replica_engine(exported_checkpoint, "cpu", "fp32", threads=1)
    assert isinstance(engine, OpenVINOEngine) and engine.preparation is not None
    fallback = load_replica_engine(four_class_checkpoint, "cpu", "fp32", threads=1)
    assert not isinstance(fallback, OpenVINOEngine) and fallback.checkpoint_id == load_classifier(four_class_checkpoint).checkpoint_id
