"""TLS on every listener, and a data plane that requires a token with role `predict`."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import ssl
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.admin.auth import mint
from gateway.protocol.pb import grpc_service_pb2 as pb
from gateway.settings import AuthSettings
from tests.gateway.harness import GatewayThread, gateway_settings

pytestmark = pytest.mark.integration

SECRET = "tls-and-auth-test-secret-0123456789abcdef"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def mlp_request() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="mlp")
    msg.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    msg.raw_input_contents.append(np.zeros((1, 784), np.float32).tobytes())
    return msg


def https(address: str, cert: Path, method: str, path: str, body: str | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = address.split(":")
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_every_listener_speaks_tls_and_the_data_plane_requires_a_token(model_repo: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = gateway_settings(model_repo)
    settings = replace(settings, server=replace(settings.server, tls_cert=cert, tls_key=key),
                       auth=AuthSettings(jwt_secret=SECRET, require_auth=True))
    predict = mint(AuthSettings(jwt_secret=SECRET), "app-1", ["predict"], 600)
    viewer = mint(AuthSettings(jwt_secret=SECRET), "sre-1", ["viewer"], 600)
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.0] * 784}]})
    with GatewayThread(settings) as gw:
        assert gw.endpoints is not None
        e = gw.endpoints
        assert https(e.http, cert, "GET", "/v2/health/ready")[0] == 200  # health stays open
        status, reply = https(e.http, cert, "POST", "/v2/models/mlp/infer", body)
        assert status == 401 and b"error" in reply
        assert https(e.http, cert, "POST", "/v2/models/mlp/infer", body, {"Authorization": f"Bearer {viewer}"})[0] == 403
        assert https(e.http, cert, "POST", "/v2/models/mlp/infer", body, {"Authorization": f"Bearer {predict}"})[0] == 200
        assert https(e.admin, cert, "GET", "/metrics")[0] == 200
        assert https(e.admin, cert, "GET", "/admin/v1/models", None, {"Authorization": f"Bearer {viewer}"})[0] == 200
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(e.grpc, credentials) as channel:
            stub = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                       request_serializer=pb.ModelInferRequest.SerializeToString,
                                       response_deserializer=pb.ModelInferResponse.FromString)
            with pytest.raises(grpc.RpcError) as err:
                stub(mlp_request(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply_msg = stub(mlp_request(), timeout=10, metadata=(("authorization", f"Bearer {predict}"),))
            assert reply_msg.outputs[0].shape == [1, 10]
        with grpc.insecure_channel(e.grpc) as plain, pytest.raises(grpc.RpcError):
            plain.unary_unary("/inference.GRPCInferenceService/ServerLive",
                              request_serializer=pb.ServerLiveRequest.SerializeToString,
                              response_deserializer=pb.ServerLiveResponse.FromString)(pb.ServerLiveRequest(), timeout=5)
