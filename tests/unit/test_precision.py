"""$HWNAS_PRECISION forces the `auto` precision of eval and train for a whole run."""
import pytest

from hwnas.accuracy.evaluate import resolve_precision as eval_precision
from hwnas.errors import HwnasError
from hwnas.precision import forced_precision
from hwnas.train.instatune import resolve_precision as train_precision


@pytest.mark.parametrize("value", ["bf16", "fp32", "BF16"])
def test_env_forces_auto(monkeypatch, value):
    monkeypatch.setenv("HWNAS_PRECISION", value)
    assert forced_precision() == value.lower()
    assert eval_precision("auto") == value.lower()
    assert train_precision("auto", "cpu") == value.lower()


@pytest.mark.parametrize("explicit", ["fp32", "bf16"])
def test_explicit_precision_beats_env(monkeypatch, explicit):
    other = "bf16" if explicit == "fp32" else "fp32"
    monkeypatch.setenv("HWNAS_PRECISION", other)
    assert eval_precision(explicit) == explicit
    assert train_precision(explicit, "cpu") == explicit


@pytest.mark.parametrize("value", ["", "auto"])
def test_unset_or_auto_follows_the_cpu(monkeypatch, value):
    from hwnas.accuracy.evaluate import cpu_has_native_bf16

    monkeypatch.setenv("HWNAS_PRECISION", value)
    assert forced_precision() is None
    assert eval_precision("auto") == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("HWNAS_PRECISION", "fp8")
    with pytest.raises(HwnasError, match=r"HWNAS_PRECISION='fp8' is not accepted; use bf16, fp32 or auto"):
        eval_precision("auto")
