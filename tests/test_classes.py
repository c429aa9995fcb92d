"""Class-name checks: each problem gets one sentence that says what to change."""

from __future__ import annotations

import pytest

from must_engine.classes import MAX_CLASS_NAME_CHARS, ClassNameError, check_class_names


def test_the_length_limit_is_stated():
    too_long = "x" * (MAX_CLASS_NAME_CHARS + 1)
    with pytest.raises(ClassNameError, match=f"is {MAX_CLASS_NAME_CHARS + 1} characters long; "
                                             f"class names can have at most "
                                             f"{MAX_CLASS_NAME_CHARS} characters"):
        check_class_names([too_long, "dog"])
    at_limit = "y" * MAX_CLASS_NAME_CHARS
    assert check_class_names([at_limit, "dog"]) == [at_limit, "dog"]
