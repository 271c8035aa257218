"""Shared fixtures: tiny models that export, compile and run in well under a second."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

# Test modules must not `from conftest import ...`: with several conftest.py files
# in tests/, the name "conftest" is rebound while collecting. Use the fixtures.


class TinyCNN(nn.Module):
    """conv-bn-relu-pool-flatten-linear(-relu-linear) on 1x8x8 inputs."""

    def __init__(self, width: int = 4, hidden: int | None = None, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)
        )
        flat = width * 4 * 4
        if hidden is None:
            self.head = nn.Linear(flat, classes)
        else:
            self.head = nn.Sequential(
                nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, classes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class GeluCNN(TinyCNN):
    """GELU has no ONNX conversion in edgeopt's exporter: compile must refuse it by name."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.act(self.features(x)), 1))


class FftMix(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x).real


class FftCNN(TinyCNN):
    """torch.fft.fft (aten.fft_fft) has no ONNX conversion either."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = FftMix()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.mix(self.features(x)), 1))


def make_tiny_cnn(seed: int = 0, **kwargs) -> TinyCNN:
    """A seeded TinyCNN whose batch norm is not the identity (random statistics)."""
    torch.manual_seed(seed)
    model = TinyCNN(**kwargs)
    bn = model.features[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def make_gelu_cnn() -> GeluCNN:
    torch.manual_seed(0)
    return GeluCNN().eval()


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    """A TinyCNN (width 4) for 1x8x8 inputs, in eval mode."""
    return make_tiny_cnn()


@pytest.fixture(scope="session")
def make_cnn():
    """``make_cnn(seed=0, width=4, hidden=None)`` -> a fresh TinyCNN in eval mode."""
    return make_tiny_cnn


@pytest.fixture(params=["gelu", "fft"])
def unexportable_cnn(request) -> tuple[nn.Module, str, str]:
    """(model, operator name, layer name) for a model edgeopt's ONNX exporter cannot lower."""
    torch.manual_seed(0)
    if request.param == "gelu":
        return GeluCNN().eval(), "gelu", "act"
    return FftCNN().eval(), "fft", "mix"


@pytest.fixture
def model_factories(monkeypatch) -> str:
    """Registers an importable module so ``edgeopt_test_models:tiny_cnn`` works as a
    ``pkg.module:factory`` spec (tests/ may not hold extra helper modules)."""
    mod = types.ModuleType("edgeopt_test_models")
    mod.tiny_cnn = make_tiny_cnn
    mod.gelu_cnn = make_gelu_cnn
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod.__name__


@pytest.fixture
def ptq_cnn() -> nn.Module:
    """edgeopt.testing's TinyCNN: every operator PTQ places (add, relu6, max-pool, ...)."""
    from edgeopt.testing import tiny_cnn as make

    return make()


@pytest.fixture
def calib() -> torch.Tensor:
    return torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train fastest on one thread, and the suite shares two cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fit_tiny(model: nn.Module, x, y, *, epochs: int, lr: float = 0.01, seed: int = 0):
    """A few Adam epochs of full-batch-64 cross-entropy on one thread (tiny models train
    fastest so); returns the model in eval mode. x: float NCHW, y: int labels."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        xt, yt = torch.as_tensor(x), torch.as_tensor(y)
        for _ in range(epochs):
            for idx in torch.randperm(len(xt)).split(64):
                opt.zero_grad()
                nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(before)
    return model.eval()


@pytest.fixture(scope="session")
def train_tiny():
    """``train_tiny(model, x, y, epochs=...)``: see ``fit_tiny``."""
    return fit_tiny


# ---------------------------------------------------------------- Hugging Face (hf:PATH)

def write_tiny_hf(path, **kwargs):
    """edgeopt.testing_hf.write_tiny_hf, skipping where transformers or tokenizers is missing."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from edgeopt.testing_hf import write_tiny_hf as write

    return write(path, **kwargs)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """A tiny sentence-transformers folder (mean pooling, normalised)."""
    return write_tiny_hf(tmp_path_factory.mktemp("tiny-hf"))


@pytest.fixture(scope="session")
def tiny_hf_classifier(tmp_path_factory):
    """The same tiny BERT with a 3-class sequence-classification head."""
    return write_tiny_hf(tmp_path_factory.mktemp("tiny-hf-cls"), classification=True)


@pytest.fixture(scope="session")
def tiny_hf_onnx(tiny_hf):
    """(folder, graph, info): the tiny folder exported by core.hf.export."""
    from edgeopt.core.hf import read_folder
    from edgeopt.core.hf.export import export_hf

    folder = read_folder(f"hf:{tiny_hf}")
    graph, info = export_hf(folder)
    return folder, graph, info


HF_TEXTS = ["the cat sat on the mat", "a fortune is a short text", "nothing lasts forever",
              "you will meet a tall dark stranger", "to be or not to be, that is the question",
              "time flies like an arrow; fruit flies like a banana", "hello", "ok then"] * 2


@pytest.fixture()
def tiny_hf_batches(tiny_hf):
    """(the tiny BERT as a transformers model, 4 tokenized batches of 4 texts)."""
    from edgeopt.core.hf import read_folder
    from edgeopt.core.hf.export import load_torch
    from edgeopt.runtime.text import TextTokenizer

    folder = read_folder(f"hf:{tiny_hf}")
    tok = TextTokenizer(folder.tokenizer, max_length=16,
                        inputs=["input_ids", "attention_mask", "token_type_ids"],
                        padding="longest")
    batches = [tok(HF_TEXTS[i:i + 4]) for i in range(0, len(HF_TEXTS), 4)]
    return load_torch(folder, "embedding"), batches
