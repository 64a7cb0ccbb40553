"""Real public datasets with missing values, from packages that ship them (nothing downloads),
and the models a data scientist would fit on them."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from flask import Flask
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

PENGUINS_CSV = files("palmerpenguins") / "data" / "penguins.csv"  # missing values written NA
PENGUIN_NUMBERS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
PENGUIN_CATEGORIES = ["island", "sex"]
PENGUIN_FEATURES = PENGUIN_NUMBERS + PENGUIN_CATEGORIES


def penguins() -> pd.DataFrame:
    return pd.read_csv(PENGUINS_CSV)


def cars() -> pd.DataFrame:
    return pd.read_json(files("vega_datasets") / "_data" / "cars.json")


def penguin_pipeline(frame: pd.DataFrame) -> Any:
    """Numbers imputed and scaled; island and sex one-hot encoded, sex's missing value a category."""
    return make_pipeline(
        ColumnTransformer(
            [
                (
                    "numbers",
                    make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                    PENGUIN_NUMBERS,
                ),
                ("categories", OneHotEncoder(handle_unknown="ignore"), PENGUIN_CATEGORIES),
            ]
        ),
        LogisticRegression(max_iter=2000),
    ).fit(frame[PENGUIN_FEATURES], frame["species"])


def add_with_cli(app: Flask, *args: str) -> None:
    result = app.test_cli_runner().invoke(args=["models", "add", *args])
    assert result.exit_code == 0, result.output


def add_penguins(app: Flask, work: Path) -> Any:
    """Fit the penguin pipeline, add it as "penguins" with the CLI and the dataset as its sample."""
    pipeline = penguin_pipeline(penguins())
    joblib.dump(pipeline, work / "penguins.joblib")
    add_with_cli(app, str(work / "penguins.joblib"), "--name", "penguins", "--sample", str(PENGUINS_CSV),
                 "--target", "species")  # fmt: skip
    return pipeline
