"""The contract: stubs regenerate identically from proto/, and the protos follow the house conventions."""

from __future__ import annotations

import importlib

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2

from dsomarket.server import gen_protos

MODULES = [p.stem for p in gen_protos.proto_files()]


def _pb2(stem: str):
    return importlib.import_module(f"dsomarket.v1.{stem}_pb2")


def test_checked_in_stubs_are_what_protoc_generates(tmp_path):
    written = gen_protos.generate(tmp_path)
    stale = [str(p) for p in written if (tmp_path / p).read_bytes() != (gen_protos.OUT_DIR / p).read_bytes()]
    stubs = gen_protos.OUT_DIR / gen_protos.PACKAGE_DIR
    extra = sorted(str(p.relative_to(gen_protos.OUT_DIR)) for p in stubs.glob("*.py*")
                   if p.relative_to(gen_protos.OUT_DIR) not in written)
    hint = f"run scripts/gen_protos.sh (grpcio-tools {getattr(grpc_tools, '__version__', '?')})"
    assert not stale, f"stale stubs {stale}: {hint}"
    assert not extra, f"stubs without a .proto: {extra}"


@pytest.mark.parametrize("stem", MODULES)
def test_package_and_path_carry_the_version(stem):
    fd = _pb2(stem).DESCRIPTOR
    assert fd.package == "dsomarket.v1"
    assert fd.name == f"dsomarket/v1/{stem}.proto"


@pytest.mark.parametrize("stem", MODULES)
def test_enums_start_with_a_prefixed_unspecified_zero(stem):
    proto = descriptor_pb2.FileDescriptorProto()
    _pb2(stem).DESCRIPTOR.CopyToProto(proto)
    enums = list(proto.enum_type) + [e for m in proto.message_type for e in m.enum_type]
    for enum in enums:
        prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_")
        assert enum.value[0].number == 0 and enum.value[0].name == f"{prefix}_UNSPECIFIED", enum.name
        assert all(v.name.startswith(prefix + "_") for v in enum.value), enum.name


@pytest.mark.parametrize("stem", MODULES)
def test_rpcs_have_their_own_request_and_response(stem):
    fd = _pb2(stem).DESCRIPTOR
    for service in fd.services_by_name.values():
        for method in service.methods:
            assert method.input_type.name == f"{method.name}Request"
            if method.server_streaming:
                assert method.name.startswith("Receive") and method.name.endswith("Stream")
            else:
                assert method.output_type.name == f"{method.name}Response"
            if method.name.startswith("List"):
                fields = method.input_type.fields_by_name
                assert fields["pagination"].message_type.name == "PaginationParams"
                assert method.output_type.fields_by_name["pagination"].message_type.name == "PaginationInfo"


def test_no_price_or_amount_is_a_float():
    """Prices and money travel as decimal strings: no binary rounding on the wire."""
    for stem in MODULES:
        for message in _pb2(stem).DESCRIPTOR.message_types_by_name.values():
            for f in message.fields:
                if any(word in f.name for word in ("price", "amount", "welfare", "dlmp", "totals")):
                    assert f.type == f.TYPE_STRING or f.message_type is not None, f"{message.name}.{f.name}"


def test_columnar_bid_batches_are_packed():
    cols = _pb2("aggregator").BidColumns.DESCRIPTOR
    for name in ("side", "quantity_kw", "interval_index", "tan_phi"):
        assert cols.fields_by_name[name].is_packed, name


def test_time_fields_are_timestamps():
    ts = "google.protobuf.Timestamp"
    for stem in MODULES:
        for message in _pb2(stem).DESCRIPTOR.message_types_by_name.values():
            for f in message.fields:
                if f.name.endswith(("_at", "_time", "_start", "departure")):
                    full = f.message_type.full_name if f.message_type else None
                    assert full == ts, f"{message.name}.{f.name}"
