"""Airflow version flags for the features that need a newer Airflow than the oldest supported."""

from __future__ import annotations


def _airflow_version() -> tuple[int, int, int]:
    from airflow import __version__
    from packaging.version import Version

    version = Version(__version__)
    return version.major, version.minor, version.micro


AIRFLOW_V_3_3_PLUS: bool = _airflow_version() >= (3, 3, 0)

__all__ = ["AIRFLOW_V_3_3_PLUS"]
