import pytest

from suite.cases.models import CASES as MODELS


@pytest.fixture(params=MODELS.names())
def model_spec(request):
    """Each registered model, in turn."""
    return MODELS.get(request.param)
