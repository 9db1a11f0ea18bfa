"""The guard every test runs under (tests/conftest.py): torch's process-wide settings are set for the test and put
back after it, so no test inherits what a command left behind."""
import pytest
import torch

from tests.support import torch_settings


def settings() -> tuple[int, bool, torch.dtype]:
    return torch.get_num_threads(), torch.is_grad_enabled(), torch.get_default_dtype()


def test_the_settings_are_put_back_after_the_body_even_when_it_fails():
    # what a command leaves behind: evaluation turns autograd off, a run sets its own thread count
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    torch.set_default_dtype(torch.float64)
    with torch_settings(1):
        assert settings() == (1, True, torch.float32)
        torch.set_num_threads(3)
        torch.set_grad_enabled(False)
        torch.set_default_dtype(torch.float16)
    assert settings() == (2, False, torch.float64)
    with pytest.raises(RuntimeError, match="inside"):
        with torch_settings(3, grad_enabled=False, dtype=torch.float16):
            assert settings() == (3, False, torch.float16)
            torch.set_num_threads(1)
            raise RuntimeError("inside")
    assert settings() == (2, False, torch.float64)
    # this test's own changes are undone by the same guard, run by conftest's autouse fixture


def test_every_test_starts_on_one_thread_with_autograd_on_and_float32():
    # whatever the test before left (the one above leaves 2 threads, autograd off, float64)
    assert settings() == (1, True, torch.float32)
