"""Serve opentelemetry_app.py with the OpenTelemetry SDK set up: ``python opentelemetry_serve.py``.

The SDK's providers become the process's global ones before the app's module is imported, as
``OpenTelemetryCloseMetrics()`` and OpenTelemetry's ASGI middleware take theirs from the global
providers. These exporters print to the console, metrics every 5 seconds and spans in batches
as they end; a collector takes the OTLP exporters (``opentelemetry-exporter-otlp``) instead.
"""

import sys

import uvicorn
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter


def main(port: int) -> None:
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=5000)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    # The app's module is imported only now, by uvicorn, with the SDK in place.
    uvicorn.run("opentelemetry_app:app", host="127.0.0.1", port=port)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
