"""What each REST call does, apart from HTTP: status and metadata answered from the models;
predict, classify and regress turned into work for the scheduler and a way to make its
outputs the answer. The order of the checks is TF Serving's (model_servers/
http_rest_api_handler.cc, 2.20.0), so that a request with several faults gets its error: for
predict the body is parsed and its signature_name checked before the model is looked up, and
the model before the instances; for classify and regress the whole body is read into examples
first.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from jobs.serving import classify, jsonbody
from jobs.serving.batching import Work
from jobs.serving.errors import invalid_argument
from jobs.serving.examples import decode_examples
from jobs.serving.limits import Limits
from jobs.serving.metadata import metadata_answer
from jobs.serving.models import Models
from jobs.serving.request import decode_predict, find_signature, signature_name
from jobs.serving.response import encode_classify, encode_predict, encode_regress
from jobs.serving.routes import Route
from jobs.serving.servable import Servable


@dataclasses.dataclass
class Call:
    """A predict, classify or regress call made ready: its work, held servable, and how the
    work's outputs become the answer."""

    servable: Servable
    work: Work
    finish: Callable[[dict[str, np.ndarray]], bytes]


class Api:
    def __init__(self, models: Models, limits: Limits):
        self.models = models
        self.limits = limits

    def status(self, route: Route) -> bytes:
        if not route.model:
            raise invalid_argument("Missing model name in request.")
        return jsonbody.dumps(self.models.status(route.model, route.version))

    def metadata(self, route: Route) -> bytes:
        if not route.model:
            raise invalid_argument("Missing model name in request.")
        servable = self.models.acquire(route.model, route.version, route.label)
        try:
            return jsonbody.dumps(metadata_answer(route.model, servable.version, servable.metadata))
        finally:
            servable.release()

    def prepare(self, route: Route, body: bytes) -> Call:
        """The call's work, with its servable acquired (the caller releases it)."""
        limits = self.limits
        payload = jsonbody.parse(body, limits.max_json_containers, limits.max_json_values)
        name = signature_name(payload)
        examples = decode_examples(payload) if route.api != "predict" else None
        servable = self.models.acquire(route.model, route.version, route.label)
        try:
            deadline = time.monotonic() + limits.request_timeout
            if examples is None:
                signature = find_signature(servable.signatures, name)
                booleans = jsonbody.may_hold_booleans(body)
                request = decode_predict(payload, signature, limits, booleans, servable.strict_ranks)
                batchable = request.batched and signature.batchable
                work = Work(
                    servable,
                    signature,
                    request.inputs,
                    request.costs,
                    request.where,
                    deadline,
                    limits.request_timeout,
                    batchable,
                )
                row_format = request.row_format
                return Call(servable, work, lambda outputs: encode_predict(outputs, row_format))
            count = examples.count
            if count > limits.max_instances:
                raise invalid_argument(f"{count} examples exceed the limit of {limits.max_instances} per request")
            if route.api == "classify":
                signature = classify.classification_signature(servable.signatures, name)

                def finish(outputs):
                    return encode_classify(*classify.classifications(outputs, count))
            else:
                signature = classify.regression_signature(servable.signatures, name)

                def finish(outputs):
                    return encode_regress(classify.regressions(outputs, count))

            batchable = signature.batchable
            costs = np.ones(count if batchable else 1, np.int64)
            inputs = {classify.INPUTS: examples.serialized}
            work = Work(servable, signature, inputs, costs, "examples", deadline, limits.request_timeout, batchable)
            return Call(servable, work, finish)
        except BaseException:
            servable.release()
            raise
