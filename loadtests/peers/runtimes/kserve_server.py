"""KServe ModelServer serving an ONNX file through onnxruntime over V2 REST and gRPC (runs in `.venv-kserve`).

Usage: python kserve_server.py --model_name NAME --model_path FILE --http_port N --grpc_port N
(every other KServe ModelServer flag passes through, e.g. --max_threads).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from onnx_session import datatype_of, input_dtypes, open_session, signature

# Loggers that write one line per request; the peers run without per-request logging, as servegate does.
PER_REQUEST_LOGGERS = ("kserve", "kserve.trace", "uvicorn.access")


class OnnxModel(Model):
    """One ONNX session; `predict` runs it inline on the event loop, as KServe's own examples do."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self._path = path

    def load(self) -> bool:
        self._session = open_session(self._path)
        self._dtypes = input_dtypes(self._session)
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._signature = signature(self._session)
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return self._signature["inputs"]

    def get_output_types(self) -> list[dict[str, Any]]:
        return self._signature["outputs"]

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse:
        # as_numpy reads raw_input_contents / the HTTP binary extension, or the typed / JSON `data`.
        feeds = {i.name: self._to_array(i.name, i.as_numpy()) for i in payload.inputs}
        wanted = [o.name for o in payload.request_outputs] if payload.request_outputs else self._output_names
        results = self._session.run(wanted, feeds)
        outputs = [_to_output(name, array) for name, array in zip(wanted, results, strict=True)]
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs,
                             use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)

    def _to_array(self, name: str, array: np.ndarray) -> np.ndarray:
        wanted = self._dtypes.get(name)
        return array if wanted is None or array.dtype == wanted else array.astype(wanted)


def _to_output(name: str, array: np.ndarray) -> InferOutput:
    # Raw bytes: to_grpc sends them as raw_output_contents; to_rest re-encodes them as binary or
    # JSON as the request asked. (An ndarray in `data` trips to_grpc's truth test.)
    output = InferOutput(name=name, shape=list(array.shape), datatype=datatype_of(array))
    output.set_data_from_numpy(array, binary_data=True)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--per_request_logs", action="store_true")
    args, _ = parser.parse_known_args()  # KServe parses its own flags (ports, threads) from argv
    model = OnnxModel(args.model_name, args.model_path)
    model.load()
    server = ModelServer(enable_latency_logging=args.per_request_logs)
    if not args.per_request_logs:
        for name in PER_REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
