"""A local model server with TF Serving 2.20's REST API, for any SavedModel: for local runs,
arm64 clusters and tests. One module per concern:

    limits       every limit, its default and what a client gets past it
    errors       the {"error": ...} answers, their codes and HTTP statuses
    routes       TF Serving's paths, versions and labels
    jsonbody     a body → JSON within structural limits, as rapidjson reads it; JSON out
    floats       floats as TF Serving writes them, a whole array at a time
    tensors      one JSON value → the array of an input's type
    request      predict's JSON → numpy inputs of a signature
    examples     classify's and regress's JSON → serialized tf.Examples
    images       what a string value costs to decode, from its header
    response     outputs → predict's, classify's and regress's answers
    metadata     the status and metadata calls' JSON, as TF Serving prints its protos
    classify     what classify and regress ask of a signature and make of its outputs
    servable     one loaded SavedModel version and how its signatures are called
    warmup       a version's warm-up from its tf_serving_warmup_requests
    modelconfig  which models, from where, which versions, which labels
    versions     one model's versions on disk: loading, unloading, retries
    models       the models served, kept up to date by the poller
    batching     the bounded work queue, fair interleaving, merged calls
    signals      what the model predicts: class counts, confidences, the prediction log
    metrics      TF Serving's Prometheus series, and this server's own
    api          what each REST call does, apart from HTTP
    connections  the HTTP connection bounds uvicorn lacks
    app          the ASGI app
    cli          `python -m jobs.serve`
"""
