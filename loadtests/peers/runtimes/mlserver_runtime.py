"""MLServer custom runtime serving an ONNX file through onnxruntime (runs inside `.venv-mlserver`).

`model-settings.json` names it as `mlserver_runtime.OnnxRuntime` and gives the file as `parameters.uri`.
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, RequestInput, ResponseOutput
from onnx_session import datatype_of, input_dtypes, open_session


class OnnxRuntime(MLModel):
    """One ONNX session; `predict` runs it inline on the event loop, as MLServer's own runtimes do."""

    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise ValueError(f"model {self.name}: parameters.uri must name the ONNX file")
        self._session = open_session(uri)
        self._dtypes = input_dtypes(self._session)
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: self._to_array(i) for i in payload.inputs}
        wanted = [o.name for o in payload.outputs] if payload.outputs else self._output_names
        results = self._session.run(wanted, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[_to_output(name, array) for name, array in zip(wanted, results, strict=True)],
        )

    def _to_array(self, request_input: RequestInput) -> np.ndarray:
        # MLServer's gRPC converter has already unpacked raw_input_contents (and typed contents)
        # into `data`; REST JSON arrives there too, flat or nested. NumpyCodec reshapes either.
        array = NumpyCodec.decode_input(request_input)
        wanted = self._dtypes.get(request_input.name)
        return array if wanted is None or array.dtype == wanted else array.astype(wanted)


def _to_output(name: str, array: np.ndarray) -> ResponseOutput:
    # Built by hand rather than with NumpyCodec.encode_output, which would turn a 1-D output ([N])
    # into [N, 1]; the model's `label` is 1-D.
    return ResponseOutput(name=name, shape=list(array.shape), datatype=datatype_of(array),
                          data=array.ravel().tolist())
