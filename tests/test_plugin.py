"""The pytest plugin: markers are registered and strict, absent hardware is a named skip."""
import torch

pytest_plugins = ["pytester"]


def test_gpu_tests_skip_naming_the_missing_hardware(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gpu
        def test_one_gpu():
            pass

        @pytest.mark.multigpu
        def test_two_gpus():
            pass
        """
    )
    result = pytester.runpytest("-rs", "--strict-markers")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result.assert_outcomes(passed=min(gpus, 1) + (gpus >= 2), skipped=(gpus < 1) + (gpus < 2))
    if gpus < 2:
        result.stdout.fnmatch_lines([f"*needs 2 CUDA GPUs; this machine has {gpus}*"])


def test_an_unregistered_marker_is_an_error(pytester):
    pytester.makepyfile("import pytest\n\n@pytest.mark.gpuu\ndef test_x():\n    pass\n")
    result = pytester.runpytest("--strict-markers")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'gpuu' not found in `markers` configuration option*"])


def test_the_plugin_does_not_import_torch_for_tests_that_do_not_need_it(pytester):
    # Every pytest run of a project with torchsuite installed loads the plugin: it must cost
    # milliseconds, not torch's seconds, unless a test asks about hardware.
    pytester.makepyfile("import sys\n\ndef test_x():\n    assert 'torch' not in sys.modules\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120).assert_outcomes(passed=1)
