"""Settings declared once (model.settings): parsing, bounds and the serve command's flags come from one declaration."""
from __future__ import annotations

import argparse

import pytest

from model.settings import ComputeSettings, SettingError, add_flags, env_names, from_environ, from_flags


def test_environment_values_are_parsed_by_their_declaration():
    settings = from_environ(ComputeSettings, {"MAX_BATCH": "8", "PRECISION": "BF16", "FROZEN_GRAPH": "auto",
                                              "WHY_BATCH_SIZE": " 4 ", "QUEUE_SIZE": ""})
    assert (settings.max_batch, settings.precision, settings.frozen_graph, settings.why_batch_size) == (8, "bf16", None, 4)
    assert settings.queue_size == ComputeSettings().queue_size  # blank: the default


@pytest.mark.parametrize(("name", "value", "words"), [("MAX_BATCH", "0", "at least 1"), ("MAX_BATCH", "x", "whole number"),
                                                       ("RUNTIME", "onnx", "one of"), ("MAX_BATCH_WAIT_MS", "-1", "negative")])
def test_a_bad_value_names_its_variable(name, value, words):
    with pytest.raises(SettingError, match=f"{name}.*{words}"):
        from_environ(ComputeSettings, {name: value})


def test_serve_flags_default_from_the_same_declarations():
    parser = argparse.ArgumentParser()
    add_flags(parser)
    assert from_flags(parser.parse_args([])) == ComputeSettings()
    given = from_flags(parser.parse_args(["--why-batch-size", "4", "--precision", "fp32", "--max-batch-wait-ms", "2.5"]))
    assert (given.why_batch_size, given.precision, given.max_batch_wait_s) == (4, "fp32", 0.0025)
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])
    assert env_names(ComputeSettings)["why_batch_size"] == "WHY_BATCH_SIZE"


def test_python_m_model_serve_flags_are_the_bot_settings_declarations():
    """The serve command's compute flags take their defaults, parsers and choices from the declarations."""
    from model.cli import build_parser

    defaults = ComputeSettings()
    args = build_parser().parse_args(["serve", "--checkpoint", "x.pt"])
    assert (args.max_batch, args.max_batch_wait_ms, args.why_batch_size, args.explain_cache_size, args.precision,
            args.device) == (defaults.max_batch, defaults.max_batch_wait_ms, defaults.why_batch_size,
                             defaults.explain_cache_size, defaults.precision, defaults.device)
    args = build_parser().parse_args(["serve", "--checkpoint", "x.pt", "--why-batch-size", "4", "--precision", "BF16"])
    assert (args.why_batch_size, args.precision) == (4, "bf16")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--checkpoint", "x.pt", "--max-batch", "many"])
