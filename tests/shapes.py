"""One fitted estimator of every shape the service serves, on real data that ships with a package.

Each ``Shape`` is what a data scientist would hand to ``models add``: the fitted
estimator, the sample CSV it is added with (feature columns, and target columns
for ``--target``), and how it was fitted (a DataFrame or a numpy array). The
expected answers come from the estimator itself, in this process.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.cluster import Birch, KMeans, MiniBatchKMeans
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Perceptron, RidgeClassifier
from sklearn.multioutput import ClassifierChain
from sklearn.neighbors import KNeighborsRegressor, LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC, OneClassSVM
from sklearn.tree import DecisionTreeClassifier

from service.app import create_app
from service.config import Settings
from tests.servers import Server, running_server

ROWS = 24  # rows of each dataset sent to the service: a spread of the data, not all of it


@dataclass(frozen=True)
class Shape:
    name: str
    task: str
    estimator: Any
    sample: pd.DataFrame  # the sample CSV: feature columns, then any target columns
    targets: tuple[str, ...] = ()  # the sample's target columns, given to --target
    on_frame: bool = True  # fitted on a DataFrame (else on its numpy values)
    with_sample: bool = True  # added with --sample (else the manifest names x0, x1, ... and y0, y1, ...)

    @property
    def features(self) -> list[str]:
        """The feature names in the manifest."""
        columns = [column for column in self.sample.columns if column not in self.targets]
        return columns if self.with_sample else [f"x{index}" for index in range(len(columns))]

    @property
    def target_names(self) -> list[str]:
        """The targets in the manifest (none for a model with one output)."""
        if len(self.targets) < 2:
            return []
        return list(self.targets) if self.with_sample else [f"y{index}" for index in range(len(self.targets))]

    def rows(self) -> list[dict[str, Any]]:
        """ROWS rows spread over the sample, as named JSON rows."""
        picked = self.sample.iloc[np.linspace(0, len(self.sample) - 1, ROWS).astype(int)]
        values = picked.drop(columns=list(self.targets)).to_numpy(dtype=object).tolist()
        return [dict(zip(self.features, map(_plain, row), strict=True)) for row in values]

    def model_input(self, rows: list[dict[str, Any]]) -> pd.DataFrame | np.ndarray:
        frame = pd.DataFrame(rows, columns=self.features)
        if self.on_frame:
            original = [column for column in self.sample.columns if column not in self.targets]
            return frame.set_axis(original, axis=1).astype(self.sample[original].dtypes.to_dict())
        return frame.to_numpy(dtype=np.float64)

    def expected(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The batch answer's fields, computed by the estimator in this process."""
        model_input = self.model_input(rows)
        values = self.estimator.predict(model_input).tolist()
        expected: dict[str, Any] = {}
        if self.task == "classification":
            labels = self.estimator.classes_
            if self.target_names:
                values = [[_label(value, labels[index]) for index, value in enumerate(row)] for row in values]
            else:
                values = [_label(value, labels) for value in values]
                if hasattr(self.estimator, "predict_proba"):
                    keys = [label_text(label) for label in labels.tolist()]
                    expected["probabilities"] = [
                        dict(zip(keys, row, strict=True))
                        for row in self.estimator.predict_proba(model_input).tolist()
                    ]
        if self.target_names:
            values = [dict(zip(self.target_names, row, strict=True)) for row in values]
        if self.task == "outlier_detection":
            expected["scores"] = self.estimator.decision_function(model_input).tolist()
        return {"predictions": values, **expected}

    def csv_text(self, rows: list[dict[str, Any]]) -> str:
        lines = [",".join(self.features)]
        lines += [",".join(map(_cell, row.values())) for row in rows]
        return "\n".join(lines) + "\n"

    def expected_csv(self, rows: list[dict[str, Any]]) -> list[list[str]]:
        """The CSV answer, header and rows, as the estimator's own answers make it."""
        expected = self.expected(rows)
        header = [f"prediction_{target}" for target in self.target_names] or ["prediction"]
        if "probabilities" in expected:
            header += [f"probability_{key}" for key in expected["probabilities"][0]]
        if "scores" in expected:
            header.append("score")
        lines = [[*self.features, *header, "error", "warnings"]]
        for index, row in enumerate(rows):
            value = expected["predictions"][index]
            cells = [*map(_cell, row.values())]
            cells += [_cell(item) for item in (value.values() if isinstance(value, dict) else [value])]
            cells += [_cell(p) for p in expected.get("probabilities", [{}] * len(rows))[index].values()]
            cells += [_cell(expected["scores"][index])] if "scores" in expected else []
            lines.append([*cells, "", ""])
        return lines

    def add_options(self, directory: Path) -> list[str]:
        """Writes the artifact (and sample) into ``directory``; the arguments of ``models add``."""
        artifact = directory / f"{self.name}.joblib"
        joblib.dump(self.estimator, artifact)
        options = [str(artifact), "--name", self.name]
        if self.with_sample:
            sample = directory / f"{self.name}.csv"
            self.sample.to_csv(sample, index=False)
            options += ["--sample", str(sample)]
            if self.targets:
                options += ["--target", ",".join(self.targets)]
        return options


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _label(value: Any, labels: np.ndarray) -> Any:
    """The class label equal to a predicted value, of the label's own type (a chain predicts 1.0 for 1)."""
    return next(
        label
        for label in labels.tolist()
        if label == value and isinstance(label, bool) == isinstance(value, bool)
    )


def _cell(value: Any) -> str:
    """A value as a CSV cell: floats by repr (the shortest text that reads back the same)."""
    return repr(value) if isinstance(value, float) else label_text(value)


def label_text(label: Any) -> str:
    """A class label as the CSV answer writes it: strings as they are, true/false and integers as JSON."""
    return label if isinstance(label, str) else json.dumps(label)


# --- The data -----------------------------------------------------------------------


def _sklearn(loader: Callable[..., Any]) -> tuple[pd.DataFrame, pd.Series]:
    bunch = loader(as_frame=True)
    frame = bunch.data.copy()
    frame.columns = [column.replace(" ", "_").replace("(cm)", "cm").strip("_") for column in frame.columns]
    return frame, bunch.target


def _penguins() -> pd.DataFrame:
    path = files("palmerpenguins") / "data" / "penguins.csv"
    frame = pd.read_csv(str(path)).dropna(subset=["bill_length_mm", "sex"])
    return frame.reset_index(drop=True)


def _fit(estimator: Any, frame: pd.DataFrame, target: Any = None, *, on_frame: bool = True) -> Any:
    features = frame if on_frame else frame.to_numpy()
    return estimator.fit(features) if target is None else estimator.fit(features, target)


# --- Every shape ----------------------------------------------------------------------


def multi_output_regressors() -> list[Shape]:
    exercise, physiology = datasets.load_linnerud(return_X_y=True, as_frame=True)
    both = pd.concat([exercise, physiology], axis=1)
    targets = tuple(physiology.columns)
    return [
        # Fitted on numpy and added without a sample: names x0.., targets y0..
        Shape(
            "linnerud_numpy",
            "regression",
            _fit(LinearRegression(), exercise, physiology.to_numpy(), on_frame=False),
            both,
            targets,
            on_frame=False,
            with_sample=False,
        ),
        Shape(
            "linnerud_named",
            "regression",
            _fit(LinearRegression(), exercise, physiology.to_numpy(), on_frame=False),
            both,
            targets,
            on_frame=False,
        ),
        # Records no n_outputs_ or coef_: its outputs are counted by predicting a row.
        Shape(
            "linnerud_knn",
            "regression",
            _fit(make_pipeline(StandardScaler(), KNeighborsRegressor(3)), exercise, physiology),
            both,
            targets,
        ),
    ]


def multi_output_classifiers() -> list[Shape]:
    penguins = _penguins()
    measures = penguins[["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]]
    iris, species = _sklearn(datasets.load_iris)
    # Two integer targets; a ClassifierChain predicts them as floats, the service as the labels they are.
    chain_targets = pd.DataFrame(
        {"species": species, "long_petal": (iris["petal_length_cm"] > 4.5).astype(int)}
    )
    return [
        Shape(
            "penguins_species_island",
            "classification",
            _fit(RandomForestClassifier(20, random_state=0), measures, penguins[["species", "island"]]),
            pd.concat([measures, penguins[["species", "island"]]], axis=1),
            ("species", "island"),
        ),
        Shape(
            "iris_chain",
            "classification",
            _fit(ClassifierChain(LogisticRegression(max_iter=1000), random_state=0), iris, chain_targets),
            pd.concat([iris, chain_targets], axis=1),
            ("species", "long_petal"),
        ),
    ]


def classifiers() -> list[Shape]:
    wine, cultivar = _sklearn(datasets.load_wine)
    cancer, diagnosis = _sklearn(datasets.load_breast_cancer)
    cancer = cancer.iloc[:, :6]
    iris, species = _sklearn(datasets.load_iris)
    names = np.array(["setosa", "versicolor", "virginica"])[species]
    malignant = diagnosis.to_numpy() == 0
    return [
        # Integer labels, no predict_proba, fitted on numpy.
        Shape(
            "wine_linear_svc",
            "classification",
            _fit(make_pipeline(StandardScaler(), LinearSVC()), wine, cultivar, on_frame=False),
            pd.concat([wine, cultivar.rename("cultivar")], axis=1),
            ("cultivar",),
            on_frame=False,
        ),
        # Boolean labels, no predict_proba.
        Shape(
            "cancer_ridge",
            "classification",
            _fit(make_pipeline(StandardScaler(), RidgeClassifier()), cancer, malignant),
            cancer.assign(malignant=malignant),
            ("malignant",),
        ),
        # Boolean labels with probabilities: keys "false" and "true".
        Shape(
            "cancer_tree",
            "classification",
            _fit(DecisionTreeClassifier(max_depth=4, random_state=0), cancer, malignant),
            cancer.assign(malignant=malignant),
            ("malignant",),
        ),
        # String labels, no predict_proba.
        Shape(
            "iris_perceptron",
            "classification",
            _fit(make_pipeline(StandardScaler(), Perceptron(random_state=0)), iris, names),
            iris.assign(species=names),
            ("species",),
        ),
        Shape(
            "wine_svc",
            "classification",
            _fit(make_pipeline(StandardScaler(), SVC()), wine, cultivar),
            wine.assign(cultivar=cultivar),
            ("cultivar",),
        ),
    ]


def outlier_detectors() -> list[Shape]:
    wine, _ = _sklearn(datasets.load_wine)
    iris, _ = _sklearn(datasets.load_iris)
    return [
        Shape(
            "wine_isolation_forest", "outlier_detection", _fit(IsolationForest(random_state=0), wine), wine
        ),
        Shape(
            "iris_lof",
            "outlier_detection",
            _fit(LocalOutlierFactor(novelty=True), iris, on_frame=False),
            iris,
            on_frame=False,
        ),
        Shape(
            "wine_one_class_svm",
            "outlier_detection",
            _fit(make_pipeline(StandardScaler(), OneClassSVM(nu=0.1)), wine),
            wine,
        ),
        Shape(
            "iris_elliptic_envelope",
            "outlier_detection",
            _fit(EllipticEnvelope(random_state=0), iris),
            iris,
        ),
    ]


def clusterers() -> list[Shape]:
    iris, _ = _sklearn(datasets.load_iris)
    wine, _ = _sklearn(datasets.load_wine)
    diabetes, _ = _sklearn(datasets.load_diabetes)
    return [
        Shape("iris_kmeans", "clustering", _fit(KMeans(3, n_init=4, random_state=0), iris), iris),
        Shape(
            "wine_minibatch_kmeans",
            "clustering",
            _fit(make_pipeline(StandardScaler(), MiniBatchKMeans(4, n_init=3, random_state=0)), wine),
            wine,
        ),
        Shape(
            "diabetes_birch",
            "clustering",
            _fit(Birch(threshold=0.02, n_clusters=5), diabetes, on_frame=False),
            diabetes,
            on_frame=False,
        ),
    ]


def every_shape() -> list[Shape]:
    return [
        *multi_output_regressors(),
        *multi_output_classifiers(),
        *classifiers(),
        *outlier_detectors(),
        *clusterers(),
    ]


@contextlib.contextmanager
def serving(shapes: Iterable[Shape], tmp_path_factory: Any, **settings: str) -> Iterator[Server]:
    """The real server over a store holding ``shapes``, each added with the CLI."""
    store = tmp_path_factory.mktemp("shapes_store")
    directory = tmp_path_factory.mktemp("shape_files")
    runner = create_app(Settings(model_store=store)).test_cli_runner()
    for shape in shapes:
        result = runner.invoke(args=["models", "add", *shape.add_options(directory)])
        assert result.exit_code == 0, (shape.name, result.output)
    with running_server(store, tmp_path_factory.mktemp("shapes_server"), **settings) as running:
        yield running
