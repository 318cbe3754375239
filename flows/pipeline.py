"""Deployment entry point: the whole pipeline (see flows/prefect.yaml)."""

from tspipe.doors.prefect_pipeline import tspipe_pipeline

__all__ = ["tspipe_pipeline"]

if __name__ == "__main__":
    tspipe_pipeline()
