"""Choosing the classification forward pass (model.runtime): forced either way, or measured; the warm-up pass."""
import torch

from model import load_classifier
from model.runtime import prepare_model, warm_up_pass


def test_forced_choices_and_the_measured_one(tiny_checkpoint):
    classifier = load_classifier(tiny_checkpoint)
    # fp32 on torch: the eager/graph choice alone (the runtime and precision choices: test_precision.py)
    fp32 = {"precision": "fp32", "runtime": "torch"}
    eager = prepare_model(classifier, False, **fp32)
    assert (eager.forward, classifier.graph) == ("eager", None)
    graph = prepare_model(classifier, True, **fp32)
    assert graph.forward == "graph" and classifier.graph is not None
    measured = prepare_model(classifier, None, probe_batch=1, workers=2, threads=1, **fp32)
    assert measured.eager_ms > 0 and measured.graph_ms > 0 and "probe" in measured.describe()
    assert (classifier.graph is not None) == (measured.forward == "graph")
    assert (measured.forward == "graph") == (measured.graph_ms < 0.95 * measured.eager_ms)
    batch = torch.randn(2, 3, 224, 224)
    reference = load_classifier(tiny_checkpoint)
    assert torch.allclose(classifier.probabilities(batch), reference.probabilities(batch), atol=1e-5)


def test_warm_up_pass_sets_the_threads_of_its_thread(classifier):
    before = torch.get_num_threads()
    try:
        assert warm_up_pass(classifier, 2, 1) > 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
