"""fp32 against bf16, torch against torch.compile and OpenVINO, on this machine, in one run.

    flock /tmp/bench.lock python bench/bench_precision.py [--parts floors,classify,burst,maps,cli] [--quick]
          [--batches 1,8,32] [--repeats 5] [--compile] [--map-settings 16/8,8/4] [--captum] [--cli-photos 240]

Parts (each prints its table; the issue's aims are printed beside the numbers, nothing asserts them):

- ``floors``: 2-thread matmul GFLOP/s in fp32 and bf16, and the ms per image they allow for our ResNet50
  (its conv and head multiply-adds, counted from the network);
- ``classify``: ms per image at each batch size, median (range) over ``--repeats`` interleaved rounds, for
  torch eager and frozen graph (fp32, bf16 weights), torch.compile (inductor, freezing; ``--compile``: its
  compile time is printed) and OpenVINO f32/bf16; each against the floors, and its largest softmax difference
  from torch fp32 eager;
- ``burst``: the bot's first burst of 30 photos (bench/bench_first_burst.py's run) per precision/runtime,
  against the bare fp32 eager model;
- ``maps``: 16/8 and 8/4 heat maps per precision and path, and captum's Occlusion (``--captum``), on a model
  trained on the synthetic separable classes (tests/training/training_synthetic.py): seconds, and max |map -
  fp32 map| over several photos, which is what ``model.occlusion.BF16_MAP_NOISE`` is set from;
- ``cli``: ``python -m model predict`` end to end on ``--cli-photos`` photos, fp32 torch against the auto choice.

``--quick``: batches 1,8, 3 repeats, map setting 16/8 only, 60 CLI photos, one burst round.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH), str(REPO / "tests" / "training")]

from bench_model import compiled_forward  # noqa: E402
from harness import default_photo, distinct_photos, make_random_checkpoint, median_range, print_machine  # noqa: E402

from model import load_classifier  # noqa: E402
from model.incremental import IncrementalOcclusion  # noqa: E402
from model.memory import keep_freed_memory  # noqa: E402
from model.openvino_runtime import OpenVINOForward, load_or_convert, openvino_version  # noqa: E402
from model.precision import bf16_capability  # noqa: E402
from model.runtime import TorchForward  # noqa: E402
from model.threads import configure_torch_threads  # noqa: E402

AIMS = {"floor": 1.3, "cli": 1.5, "map": 1.8, "burst": 1.3}


def gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def network_gflop(network: torch.nn.Module) -> float:
    """Multiply-adds x 2 of one 224 x 224 image: every conv (from the incremental engine's plan) plus the head."""
    prepared = IncrementalOcclusion(network).prepare(torch.zeros(3, 224, 224), 224, 224)
    convs = prepared.multiply_adds(prepared.batches(1))[2]
    linear = sum(m.weight.numel() for m in network.modules() if isinstance(m, torch.nn.Linear))
    return 2 * (convs + linear) / 1e9


def part_floors(classifier) -> dict[str, float]:
    work = network_gflop(classifier.network)
    rates = {name: statistics.median(gflops(dtype) for _ in range(3)) for name, dtype in (("fp32", torch.float32),
                                                                                        ("bf16", torch.bfloat16))}
    floors = {name: 1000 * work / rate for name, rate in rates.items()}
    print(f"\n== matmul floors (2048^3, {torch.get_num_threads()} threads); our network: {work:.2f} GFLOP per image ==")
    for name in rates:
        print(f"{name}: {rates[name]:7.0f} GFLOP/s -> floor {floors[name]:5.1f} ms per image")
    return floors


def classify_variants(classifier, with_compile: bool) -> dict[str, object]:
    network = classifier.network
    variants: dict[str, object] = {"torch eager fp32": network}
    if classifier.use_frozen_graph():
        variants["torch graph fp32"] = classifier.graph
    bf16 = TorchForward(network, torch.bfloat16)
    variants["torch eager bf16"] = bf16
    with torch.no_grad():
        example = torch.zeros(1, 3, 224, 224, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        bf16_graph = torch.jit.freeze(torch.jit.trace(bf16.network, example, check_trace=False).eval())
    variants["torch graph bf16"] = lambda batch: bf16_graph(batch.to(torch.bfloat16)).float()
    if with_compile:
        torch._inductor.config.freezing = True
        for name, module in (("fp32", network), ("bf16", bf16.network)):
            started = time.perf_counter()
            forward = compiled_forward(type(classifier)(module, classifier.class_names), budget_s=600)
            if forward is not None:
                dtype = next(module.parameters()).dtype
                variants[f"torch.compile {name}"] = lambda batch, f=forward, d=dtype: f(batch.to(d))
                print(f"torch.compile {name}: first call {time.perf_counter() - started:.1f} s (a new batch size recompiles)")
    if openvino_version():
        for precision in ("fp32", "bf16"):
            model, _ = load_or_convert(network, classifier.checkpoint_id, precision, 224, None)
            variants[f"OpenVINO {precision}"] = OpenVINOForward(model, precision, torch.get_num_threads())
    return variants


def part_classify(classifier, photo: bytes, batches: list[int], repeats: int, floors: dict[str, float],
                  with_compile: bool) -> dict[tuple[str, int], float]:
    variants = classify_variants(classifier, with_compile)
    tensor = classifier.preprocess(classifier.open(photo))
    medians = {}
    print(f"\n== classification: ms per image, median (range) of {repeats} interleaved rounds; x floor = / the "
          f"precision's matmul floor (aim on native bf16: <= {AIMS['floor']}x the bf16 floor) ==")
    for batch in batches:
        inputs = tensor.unsqueeze(0).repeat(batch, 1, 1, 1).contiguous(memory_format=torch.channels_last)
        times: dict[str, list[float]] = {name: [] for name in variants}
        with torch.inference_mode():
            reference = torch.softmax(variants["torch eager fp32"](inputs).float(), dim=1)
            differences = {name: float((torch.softmax(f(inputs).float(), dim=1) - reference).abs().max())
                           for name, f in variants.items()}  # also the untimed first pass at this shape
            for _ in range(repeats):
                for name, forward in variants.items():
                    started = time.perf_counter()
                    forward(inputs)
                    times[name].append(1000 * (time.perf_counter() - started) / batch)
        print(f"batch {batch}:")
        for name, samples in times.items():
            medians[name, batch] = statistics.median(samples)
            floor = floors.get("bf16" if "bf16" in name else "fp32")
            against = f"{medians[name, batch] / floor:5.2f}x floor" if floor else ""
            print(f"  {name:<20} {median_range(samples, '.1f'):>22} ms  {against}  max|dP| {differences[name]:.4f}")
    return medians


def part_burst(checkpoint: Path, photo: bytes, rounds: int) -> None:
    import bench_first_burst as burst

    configurations = [("fp32 torch (bare reference's setting)", {"PRECISION": "fp32", "RUNTIME": "torch"}),
                      ("bf16 torch", {"PRECISION": "bf16", "RUNTIME": "torch"}),
                      ("fp32 OpenVINO", {"PRECISION": "fp32", "RUNTIME": "openvino"}),
                      ("auto (bf16 OpenVINO here)", {"PRECISION": "auto", "RUNTIME": "auto"})]
    args = burst.parse_args(["--bursts", "30"])
    classifier = load_classifier(checkpoint)
    runs = []
    for _ in range(rounds):
        for name, extra in configurations:  # alternating, so every configuration meets the same drift
            runs.append(asyncio.run(burst.one_run(args, name, extra, checkpoint, classifier, photo, [30])))
    print(f"\n== the bot's first burst of 30 (aim: >= {AIMS['burst']}x the bare fp32 eager model's photos/s) ==")
    burst.print_summary(runs)


def trained_synthetic(folder: Path) -> tuple[Path, list[Path]]:
    from training_synthetic import LEARN_COPIES, LEARN_EPOCHS, LEARN_PER_CLASS, write_class_folders

    from training.pipeline import TrainingSettings, run_training

    data = write_class_folders(folder / "data", LEARN_PER_CLASS)
    settings = TrainingSettings(data=data, out=folder / "out" / "model.pt", weights="none", copies=LEARN_COPIES,
                                epochs=LEARN_EPOCHS, seed=0)
    result = run_training(settings)
    print(f"trained on the synthetic classes: test accuracy {result.metrics['test_accuracy']:.0%}")
    return result.checkpoint, sorted(data.rglob("*.png"))


def part_maps(folder: Path, settings: list[tuple[int, int]], photos_for_noise: int, with_captum: bool) -> None:
    from model import occlusion
    from model.occlusion import OcclusionExplainer

    checkpoint, photos = trained_synthetic(folder)
    classifier = load_classifier(checkpoint)
    network = classifier.network
    forwards = {p: OpenVINOForward(load_or_convert(network, classifier.checkpoint_id, p, 224, None)[0], p,
                                   torch.get_num_threads()) for p in ("fp32", "bf16")} if openvino_version() else {}
    paths = {"fp32 incremental": OcclusionExplainer(network),
             "bf16 incremental": OcclusionExplainer(network, precision="bf16")}
    for precision, forward in forwards.items():
        paths[f"{precision} OpenVINO batched"] = OcclusionExplainer(network, method="batched", precision=precision,
                                                                    forward=forward)
    occlusion.BF16_MAP_NOISE = 0.0  # raw bf16 maps: what the noise rule is set from (and no fp32 redo timed)
    chosen = [photos[i] for i in np.linspace(0, len(photos) - 1, photos_for_noise).round().astype(int)]
    images = [classifier.preprocess(classifier.open(p)) for p in chosen]
    print(f"\n== heat maps on the trained synthetic model: seconds (first photo), max |map - fp32 map| and map range "
          f"over {len(images)} photos (aim: 16/8 bf16 >= {AIMS['map']}x fp32) ==")
    for patch, stride in settings:
        timings, maps = {}, {name: [] for name in paths}
        for index, image in enumerate(images):
            target = int(classifier.probabilities(image[None])[0].argmax())
            for name, explainer in paths.items():
                started = time.perf_counter()
                maps[name].append(explainer.with_settings(patch, stride)(image, target))
                if index == 0:
                    timings[name] = time.perf_counter() - started
            if index == 0 and with_captum:
                timings["captum Occlusion fp32"] = captum_seconds(network, image, target, patch, stride)
        print(f"{patch}/{stride}:")
        for name, seconds in timings.items():
            line = f"  {name:<24} {seconds:7.2f} s  {timings['fp32 incremental'] / seconds:5.2f}x fp32 incremental"
            if name in maps:
                differences = [float(np.abs(m - r).max()) for m, r in zip(maps[name], maps["fp32 incremental"])]
                ranges = [float(np.ptp(r)) for r in maps["fp32 incremental"]]
                line += f"  max|diff| {max(differences):.4f} (median {statistics.median(differences):.4f})"
                line += f"  fp32 map range {median_range(ranges, '.3f')}"
            print(line)


def captum_seconds(network, image: torch.Tensor, target: int, patch: int, stride: int) -> float:
    from captum.attr import Occlusion

    started = time.perf_counter()
    with torch.inference_mode():
        Occlusion(lambda batch: torch.softmax(network(batch), dim=1)).attribute(
            image.unsqueeze(0), sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride), baselines=0,
            target=target, perturbations_per_eval=16)
    return time.perf_counter() - started


def part_cli(checkpoint: Path, photo: bytes, count: int, rounds: int, folder: Path) -> None:
    files = []
    for number, data in enumerate(distinct_photos(photo, count)):
        files.append(folder / f"photo{number:03d}.jpg")
        files[-1].write_bytes(data)
    configurations = {"fp32 torch": ["--precision", "fp32", "--runtime", "torch"], "auto": []}
    seconds: dict[str, list[float]] = {name: [] for name in configurations}
    for round_ in range(rounds + 1):  # round 0 (auto only) fills the OpenVINO cache and the page cache, untimed
        for name, flags in configurations.items():
            if not round_ and name != "auto":
                continue
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "model", "predict", "--checkpoint", str(checkpoint), *flags,
                                   *map(str, files)], capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr[-500:]}")
            if round_:
                seconds[name].append(time.perf_counter() - started)
            elif name == "auto":
                print(f"auto's choice: {done.stderr.strip().splitlines()[-1]}")
    print(f"\n== python -m model predict on {count} photos, end to end, seconds (aim: >= {AIMS['cli']}x fp32) ==")
    for name, samples in seconds.items():
        print(f"  {name:<12} {median_range(samples, '.1f'):>20} s  {count / statistics.median(samples):6.1f} photos/s")
    print(f"  speed-up: {statistics.median(seconds['fp32 torch']) / statistics.median(seconds['auto']):.2f}x")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="floors,classify,burst,maps,cli")
    parser.add_argument("--quick", action="store_true", help="fewer batches, rounds, photos and map settings")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling on 2 cores)")
    parser.add_argument("--map-settings", default="16/8,8/4")
    parser.add_argument("--map-photos", type=int, default=6, help="photos the bf16-vs-fp32 map difference is taken over")
    parser.add_argument("--captum", action="store_true", help="also time captum's Occlusion (fp32) per map setting")
    parser.add_argument("--cli-photos", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the burst and CLI parts")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.repeats, args.map_settings, args.cli_photos, args.rounds = "1,8", 3, "16/8", 60, 1
        args.map_photos = 3
    parts = set(args.parts.split(","))
    print_machine()
    threads = configure_torch_threads()
    keep_freed_memory()
    capability = bf16_capability()
    print(f"torch {torch.__version__}, OpenVINO {openvino_version() or 'not installed'}, {threads} threads; "
          f"native bf16: {capability.native_bf16} ({capability.evidence}); other work may share this machine")
    name, photo = default_photo()
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        folder = Path(tmp)
        checkpoint = make_random_checkpoint(folder)
        classifier = load_classifier(checkpoint)
        floors = part_floors(classifier) if parts & {"floors", "classify"} else {}
        if "classify" in parts:
            part_classify(classifier, photo, [int(b) for b in args.batches.split(",")], args.repeats, floors, args.compile)
        if "burst" in parts:
            part_burst(checkpoint, photo, args.rounds)
        if "maps" in parts:
            settings = [tuple(int(v) for v in s.split("/")) for s in args.map_settings.split(",")]
            part_maps(folder / "maps", settings, args.map_photos, args.captum)
        if "cli" in parts:
            (folder / "cli").mkdir()
            part_cli(checkpoint, photo, args.cli_photos, args.rounds, folder / "cli")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
