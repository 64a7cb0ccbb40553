"""The gRPC modules committed beside the protocol's .proto file are the ones ``make proto`` makes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import REPO_ROOT

PROTO = Path("service/v2/grpc_predict_v2.proto")
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")


def test_the_committed_grpc_modules_are_generated_from_the_proto(tmp_path: Path) -> None:
    # The command of `make proto`, writing elsewhere.
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
               f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(PROTO)]  # fmt: skip
    subprocess.run(command, cwd=REPO_ROOT, check=True, timeout=60, capture_output=True)
    for name in GENERATED:
        made = (tmp_path / PROTO.parent / name).read_text()
        committed = (REPO_ROOT / PROTO.parent / name).read_text()
        assert made == committed, f"{name} differs from what `make proto` generates: run it"
