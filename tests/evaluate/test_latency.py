import os

import numpy as np
import pytest
import torch

from edgeopt.core.errors import ConfigError
from edgeopt.evaluate import Latency, interleaved_p50s, measure_latency
from edgeopt.evaluate import latency as latency_module


class FakeClock:
    """perf_counter replacement: time only moves when the model 'runs'."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_percentiles_from_known_durations(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(latency_module.time, "perf_counter", clock)
    durations_ms = iter([100.0] * 3 + list(range(1, 11)))  # 3 warm-up calls, then 1..10 ms
    shapes = []

    def model(x):
        shapes.append((x.shape, x.dtype))
        clock.now += next(durations_ms) / 1000.0
        return x

    lat = measure_latency(model, (3, 8, 8), batch=4, warmup=3, repeats=10)

    assert shapes == [((4, 3, 8, 8), np.float32)] * 13
    assert lat.batch == 4
    assert lat.repeats == 10
    # The slow warm-up calls must not leak into the statistics.
    assert lat.p50_ms == pytest.approx(5.5)
    assert lat.p90_ms == pytest.approx(9.1)
    assert lat.mean_ms == pytest.approx(5.5)
    assert lat.threads == os.cpu_count()


def test_min_time_extends_repeats(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(latency_module.time, "perf_counter", clock)

    def model(x):
        clock.now += 0.010
        return x

    lat = measure_latency(model, (2,), warmup=0, repeats=2, min_time_s=0.1)
    assert 10 <= lat.repeats <= 11
    assert lat.p50_ms <= lat.p90_ms


def test_real_timing_and_predictor_threads():
    class Predictor:
        threads = 3

        def run(self, x):
            return x * 2

    lat = measure_latency(Predictor(), (1, 4, 4), warmup=1, repeats=7)
    assert lat.threads == 3
    assert lat.repeats == 7
    assert 0.0 < lat.p50_ms <= lat.p90_ms
    assert set(lat.to_dict()) == {"batch", "p50_ms", "p90_ms", "mean_ms", "repeats", "threads"}
    assert Latency.from_dict(lat.to_dict()) == lat


def test_torch_threads_set_and_restored():
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x

    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    lat = measure_latency(Probe(), (4,), warmup=1, repeats=3, threads=target)
    assert lat.threads == target
    assert seen == [target] * 4
    assert torch.get_num_threads() == before


def test_bad_options():
    with pytest.raises(ConfigError, match="repeats >= 1"):
        measure_latency(lambda x: x, (1,), repeats=0)
    with pytest.raises(ConfigError, match="threads"):
        measure_latency(lambda x: x, (1,), threads=0)


def test_interleaved_rounds_time_every_runnable_once_per_round():
    calls: list[str] = []

    def make(name):
        def fn(x):
            calls.append(name)
            return x
        return fn

    p50s = interleaved_p50s({"a": make("a"), "b": make("b")}, (3,), batch=2, rounds=3,
                            warmup=0, repeats=1)
    assert calls == ["a", "b"] * 3
    assert set(p50s) == {"a", "b"} and all(len(v) == 3 and min(v) >= 0 for v in p50s.values())
    with pytest.raises(ConfigError, match="rounds >= 1"):
        interleaved_p50s({"a": make("a")}, (3,), batch=1, rounds=0)
