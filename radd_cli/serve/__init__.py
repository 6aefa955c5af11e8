"""`radd serve`: an OpenAI-compatible completions server on the lockstep sampling engine (docs/serving.md).

- `app`: the FastAPI routes, the wire format's responses and streams, uvicorn;
- `completions`: a request → started rows (templates, seeds, SamplingConfig) and rows → text;
- `scheduler`: continuous batching, the one thread that calls the network;
- `metrics`: the Prometheus counters and gauges behind GET /metrics;
- `wire`: the OpenAI request body, response objects and error objects.

Needs the `serve` extra (`pip install 'radd[serve]'`); nothing here is imported by the rest of radd.
"""
