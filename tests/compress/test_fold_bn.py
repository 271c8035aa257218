import torch

from edgeopt.compress.fold_bn import fold_batchnorm
from edgeopt.core.canonical import canonical_copy


def test_fold_removes_bn_and_keeps_function(ptq_cnn, calib):
    gm = canonical_copy(ptq_cnn, calib[:2])
    folded = fold_batchnorm(gm)
    assert folded == ["bn1", "bn2"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gm.modules())
    with torch.no_grad():
        assert torch.allclose(gm(calib), ptq_cnn(calib), atol=1e-5)
