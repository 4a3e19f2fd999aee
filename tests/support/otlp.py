"""An in-process OTLP/HTTP trace collector: what the node exports, decoded."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class Collector:
    """``POST /v1/traces`` (protobuf) on 127.0.0.1, bound once by the server itself;
    ``spans`` is every span received: (service name, span), in arrival order."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    for rs in request.resource_spans:
                        service = next((a.value.string_value for a in rs.resource.attributes
                                        if a.key == "service.name"), "")  # fmt: skip
                        for ss in rs.scope_spans:
                            outer.spans.extend((service, span) for span in ss.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def trace(self, trace_id: bytes) -> dict[str, object]:
        """The spans of one trace by name (the last of each name)."""
        return {span.name: span for _, span in self.spans if span.trace_id == trace_id}
