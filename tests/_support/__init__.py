"""Private support code of the tests: models, Trainer runs and readers shared by several test folders.

Only the ``conftest.py`` files import these modules (and the scripts that tests run in subprocesses,
where fixtures do not reach); test modules get everything here through the fixtures those files define.
"""
