"""A gRPC client that knows nothing of scriptd but its socket: default channel options, no
.proto file. It learns the services through server reflection (v1alpha, what grpcio's
reflection client asks for), builds the message types from the descriptors the server sends,
then calls health Check, scriptd Status (unary) and Logs (server streaming).

Usage: reflect_client.py SOCKET SCRIPT   -> one JSON object on stdout
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    socket, script = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel("unix:" + socket)  # default options
    db = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(db.get_services())
    pool = descriptor_pool.DescriptorPool(db)

    def method(full_service, name):
        svc = pool.FindServiceByName(full_service)
        m = svc.methods_by_name[name]
        req = message_factory.GetMessageClass(m.input_type)
        resp = message_factory.GetMessageClass(m.output_type)
        path = "/%s/%s" % (full_service, name)
        call = channel.unary_stream if m.server_streaming else channel.unary_unary
        stub = call(path, request_serializer=req.SerializeToString,
                    response_deserializer=resp.FromString)
        return req, stub

    req, check = method("grpc.health.v1.Health", "Check")
    health = json_format.MessageToDict(check(req(), timeout=10))

    req, status = method("scriptd.v1.Scriptd", "Status")
    st = status(req(), timeout=10)
    names = [s.name for s in st.scripts]

    req, logs = method("scriptd.v1.Scriptd", "Logs")
    lines = [line.text for line in logs(req(script=script, lines=100), timeout=10)]

    print(json.dumps({
        "grpc_version": grpc.__version__,
        "services": services,
        "health": health,
        "running_version": st.running_version,
        "scripts": names,
        "lines": lines,
    }))


if __name__ == "__main__":
    main()
