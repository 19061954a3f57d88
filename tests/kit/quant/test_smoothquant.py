import pytest
import torch
from torch import nn

import slimkit
from slimkit.errors import InvalidParameterError
from slimkit.quant.smoothquant import InputScale, smooth


class Outliers(nn.Module):
    """LayerNorm then two Linears: a few input channels ~30x larger (MiniLM's pattern)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.LayerNorm(64)
        with torch.no_grad():
            self.norm.weight[:3] = 30.0
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.norm(x))))


def _data(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, 64, generator=g) for _ in range(n)]


def test_smoothed_model_is_equivalent_and_input_untouched():
    m = Outliers().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    s, spread = smooth(m, _data())
    x = torch.randn(16, 64)
    torch.testing.assert_close(s(x), m(x), rtol=1e-4, atol=1e-5)
    assert set(spread) == {"fc1", "fc2"} and spread["fc1"] > 2  # outlier channels got larger factors
    assert isinstance(s.fc1[0], InputScale) and isinstance(s.fc1[1], nn.Linear)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_static_int8_error_drops_after_smoothing():
    m = Outliers().eval()
    data = _data()
    x = torch.randn(64, 64)
    plain, _ = slimkit.quantize(m, bits=8, activations=data)
    smoothed, _ = slimkit.quantize(smooth(m, data)[0], bits=8, activations=data)
    ref = m(x)
    err_plain = (plain(x) - ref).pow(2).mean()
    err_smooth = (smoothed(x) - ref).pow(2).mean()
    assert err_smooth < 0.5 * err_plain


def test_alpha_zero_leaves_weights_scaled_by_inverse_weight_range_only():
    m = Outliers().eval()
    s, _ = smooth(m, _data(), alpha=0.0, include=["fc2"])
    assert isinstance(s.fc1, nn.Linear) and isinstance(s.fc2, nn.Sequential)
    w_max = m.fc2.weight.abs().amax(0)
    torch.testing.assert_close(s.fc2[0].scale, w_max)


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"alpha": True}, {"include": ["nothing*"]}])
def test_bad_arguments_are_slimkit_errors(kwargs):
    with pytest.raises(InvalidParameterError):
        smooth(Outliers(), _data(1), **kwargs)
