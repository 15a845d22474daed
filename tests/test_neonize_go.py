"""The contract of the neonize adapter (supervisor/engines/neonize_go.py) with the installed
neonize: the private parts it reaches are still there, in the shape it uses them."""

from __future__ import annotations

import ctypes
import weakref
from pathlib import Path

import pytest
from neonize import _binder
from neonize.client import NewClient

from supervisor.engines import neonize_go


@pytest.mark.parametrize("accepted", ["0.5.2", "0.5.3", "0.5.10", "0.5.2.post1", "0.5.9rc1"])
def test_compatible_releases_are_accepted(accepted: str) -> None:
    neonize_go.check_version(accepted)


@pytest.mark.parametrize("refused", ["0.5.1", "0.4.3", "0.6.0", "0.6.0rc1", "1.0", "unknown"])
def test_releases_outside_the_range_are_refused(refused: str) -> None:
    with pytest.raises(ImportError, match=r"neonize >=0\.5\.2,<0\.6, found") as caught:
        neonize_go.check_version(refused)
    assert "re-verify the private parts" in str(caught.value)


def test_the_installed_neonize_is_in_the_range_pyproject_pins() -> None:
    from importlib.metadata import version

    neonize_go.check_version(version("neonize"))
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert f'"neonize{neonize_go.NEONIZE_RANGE}"' in pyproject


def test_neonize_takes_the_17_arguments_run_client_passes() -> None:
    names = [getattr(t, "__name__", repr(t)) for t in _binder.gocode.Neonize.argtypes]
    c_char_p, c_int = ctypes.c_char_p.__name__, ctypes.c_int.__name__
    assert names[:6] == [c_char_p, c_char_p, c_char_p, c_int, c_int, c_char_p]
    assert _binder.gocode.Neonize.argtypes[6:10] == [
        _binder.func_string, _binder.func_string,
        _binder.func_callback_bytes, _binder.func_callback_bytes2,
    ]
    assert names[10:16] == [c_char_p, c_int, c_char_p, c_int, c_char_p, c_int]
    assert names[16].startswith("LP_")  # the proxy settings pointer (None: no proxy)
    assert len(names) == 17
    assert _binder.gocode.Stop.argtypes == [ctypes.c_char_p]


def test_callback_types() -> None:
    def two(a: int, b: int) -> None: ...

    def four(a: bytes, b: int, c: int, d: int) -> None: ...

    assert isinstance(neonize_go.string_callback(two), _binder.func_string)
    assert isinstance(neonize_go.log_callback(two), _binder.func_callback_bytes2)
    assert isinstance(neonize_go.event_callback(four), _binder.func_callback_bytes)
    assert _binder.func_string._argtypes_ == (ctypes.c_void_p, ctypes.c_void_p)
    assert _binder.func_callback_bytes._argtypes_ == (
        ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int
    )
    assert _binder.func_callback_bytes2._argtypes_ == (ctypes.c_void_p, ctypes.c_int)


def test_api_client_has_no_finalizer_left(tmp_path: Path) -> None:
    plain = NewClient(str(tmp_path / "a.db"), uuid="wasup-contract-a")
    assert isinstance(plain._stop_finalizer, weakref.finalize) and plain._stop_finalizer.alive
    plain._stop_finalizer.detach()
    client = neonize_go.api_client(str(tmp_path / "b.db"), "wasup-contract-b")
    assert client.uuid == b"wasup-contract-b"
    assert not client._stop_finalizer.alive
