"""A local model server that keeps TF Serving's REST contract (the part this project uses),
for local runs, arm64 clusters and tests. One module per concern:

    limits       every limit, its default and what a client gets past it
    errors       the {"error": ...} answers and their status codes
    routes       TF Serving's paths and version numbers
    jsonbody     a body → JSON within structural limits; JSON out
    request      JSON → numpy inputs of a signature (predict's request contract)
    images       image headers: format, size, pixel budget
    response     outputs → predict's answer (response contract)
    servable     one loaded SavedModel version and how its signatures are called
    versions     versions on disk: loading, swapping, retries
    batching     the bounded work queue, fair interleaving, merged calls
    metrics      Prometheus metrics
    connections  the HTTP connection bounds uvicorn lacks
    app          the ASGI app
    cli          `python -m jobs.serve`
"""
