"""ONNX external-data paths that leave the model's folder are refused at intake (issue 14)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeopt.core.errors import ModelLoadError
from edgeopt.core.onnx_external import check_external_data
from edgeopt.core.onnx_import import read_onnx


def _model(tmp_path, location):
    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        w.external_data.add(key=k, value=v)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    path = d / "model.onnx"
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../x.bin"])
def test_escaping_location_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    path = _model(tmp_path, location)
    for load in (check_external_data, read_onnx):
        with pytest.raises(ModelLoadError, match="outside the model's folder") as info:
            load(str(path))
        assert "\n" not in str(info.value)


def test_location_inside_folder_loads(tmp_path):
    path = _model(tmp_path, "w.bin")
    (path.parent / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    check_external_data(path)
    assert read_onnx(str(path)).graph.initializer[0].name == "w"
