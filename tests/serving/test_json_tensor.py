"""TF Serving's JSON codec, as its own tests expect it: every case here is one of
tensorflow_serving/util/json_tensor_test.cc at 2.20.0 (the test named in each docstring), its
request and its expected tensor, answer or error text, written again against this server's codec
(jobs/serving: jsonbody, request, examples, response). No server, no model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jobs.serving import jsonbody
from jobs.serving.errors import ApiError
from jobs.serving.examples import decode_examples
from jobs.serving.limits import Limits
from jobs.serving.request import decode_predict, signature_name
from jobs.serving.response import encode_classify, encode_predict, encode_regress
from jobs.serving.servable import Signature, TensorInfo


def signature(**dtypes: str) -> Signature:
    inputs = {key: TensorInfo(key, f"{key}:0", f"DT_{dtype.upper()}", None) for key, dtype in dtypes.items()}
    return Signature("serving_default", "tensorflow/serving/predict", inputs, {})


def decode(body: str, **dtypes: str):
    payload = jsonbody.parse(body.encode(), 10**6, 10**6)
    signature_name(payload)
    return decode_predict(payload, signature(**dtypes), Limits(), jsonbody.may_hold_booleans(body.encode()))


def error(body: str, **dtypes: str) -> ApiError:
    with pytest.raises(ApiError) as err:
        decode(body, **dtypes)
    return err.value


def same_text(answer: bytes, expected: str) -> None:
    """TF Serving's CompareJsonAllValuesAsStrings: the same JSON, every number compared as its
    text (`9e+06` is not `9000000.0`, `3.0` is not `3`); whitespace aside."""

    def load(text):
        return json.loads(text, parse_float=str, parse_int=str, parse_constant=str)

    assert load(answer) == load(expected), answer


# --- requests: tensors ---------------------------------------------------------------------


def test_single_unnamed_tensor_mixed_numbers():
    """MixedInputForFloatTensor, MixedInputForDoubleTensor: integers and decimals are numbers."""
    floats = decode('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', default="float").inputs["default"]
    assert floats.dtype == np.float32 and floats.tolist() == np.float32([1, 2, 3, 4, 5.003, 0.007, 0]).tolist()
    doubles = decode('{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', default="double").inputs["default"]
    assert doubles.dtype == np.float64 and doubles.tolist() == [1, 2, 3, 4, 0.662, 0, 0]


def test_float_limits():
    """FloatTensorWithPrecisionLoss, FloatTensorThatExceedsMaxReturnsInf, ...MinReturnsZero."""
    lossy = [float(np.float32(1435774380))]  # taken with the float's precision loss, either way
    assert decode('{"instances": [1435774380]}', default="float").inputs["default"].tolist() == lossy
    assert decode('{"instances": [1435774380.0]}', default="float").inputs["default"].tolist() == lossy
    huge = decode('{"instances": [1.7976931348623157e308, -1.7976931348623157e308]}', default="float")
    assert huge.inputs["default"].tolist() == [math.inf, -math.inf]
    tiny = decode('{"instances": [2.2250738585072014e-308, -2.2250738585072014e-308]}', default="float")
    assert tiny.inputs["default"].tolist() == [0.0, 0.0] and math.copysign(1, tiny.inputs["default"][1]) == -1


def test_a_body_with_trailing_bytes():
    """TensorFromNonNullTerminatedBuffer: the first complete value is the request."""
    request = decode('{"instances": [[1,2],[3,4],[5,6]]}X', default="int32")
    tensor = request.inputs["default"]
    assert tensor.dtype == np.int32 and tensor.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_base64_strings():
    """SingleUnnamedTensorBase64Scalars, SingleUnnamedTensorBase64Lists, SingleNamedTensorBase64."""
    hello, world = '{ "b64" : "aGVsbG8=" }', '{ "b64": "d29ybGQ=" }'
    scalars = decode(f'{{"instances": [{hello}, {world}]}}', default="string").inputs["default"]
    assert scalars.shape == (2,) and scalars.tolist() == [b"hello", b"world"]
    lists = decode(f'{{"instances": [[{hello}], [{world}]]}}', default="string").inputs["default"]
    assert lists.shape == (2, 1) and lists.ravel().tolist() == [b"hello", b"world"]
    named = decode(f'{{"instances": [{{"default": [[{hello}], [{world}]]}}]}}', default="string")
    assert named.inputs["default"].shape == (1, 2, 1)


def test_several_named_tensors():
    """MultipleNamedTensor: each named input batched over the instances, NaN and Infinity too."""
    request = decode(
        """{"instances": [
            {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
             "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
            {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
             "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}""",
        int_tensor="int32",
        str_tensor="string",
        float_tensor="float",
        dbl_tensor="double",
    )
    inputs = request.inputs
    assert inputs["int_tensor"].shape == (2, 3, 2) and inputs["int_tensor"].ravel().tolist()[6:] == [7, 8, 9, 0, 1, 2]
    assert inputs["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    assert inputs["float_tensor"].dtype == np.float32 and inputs["float_tensor"][1].tolist() == [2.0, math.inf]
    assert math.isnan(inputs["float_tensor"][0, 1]) and inputs["dbl_tensor"].shape == (2, 1)


def test_columnar_format():
    """SingleUnnamedTensorColumnarFormat, MultipleNamedTensorColumnarFormat."""
    named = decode('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', int_tensor="int32")
    unnamed = decode('{"inputs": [[[1,2],[3,4],[5,6]]]}', int_tensor="int32")
    assert named.inputs["int_tensor"].shape == unnamed.inputs["int_tensor"].shape == (1, 3, 2)
    assert not named.row_format
    several = decode(
        '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"], '
        '"bin_tensor": { "b64" : "aGVsbG8=" }}}',
        int_tensor="int32",
        str_tensor="string",
        bin_tensor="string",
    )
    assert several.inputs["bin_tensor"].shape == () and several.inputs["bin_tensor"][()] == b"hello"
    assert several.inputs["str_tensor"].tolist() == [b"foo", b"bar"]
    assert not several.batched  # inputs of different sizes: run as they are, never merged


@pytest.mark.parametrize(
    "body,needle",
    [
        ('{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', "must be a string value"),
        ('{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', "Not formatted correctly"),
        ('{"instances": [[1,2],[3,4],[5,6,7]]}', "Expecting tensor size"),
        ('{"instances": [[1,2],[3,4],[[5,6]]]}', "Expecting shape"),
        ('{"instances": [1, [1]]}', "Expecting shape"),
        ('{"instances": [[1,2],["a", "b"]]}', "not of expected type"),
    ],
)
def test_single_unnamed_tensor_errors(body, needle):
    """SingleUnnamedTensorErrors."""
    err = error(body, default="int32")
    assert err.status == 400 and err.code == "INVALID_ARGUMENT" and needle in err.message


def test_single_unnamed_tensor_error_texts():
    """The whole messages, as json_tensor.cc writes them."""
    assert error('{"instances": [[1,2],[3,4],[5,6,7]]}', default="int32").message == (
        "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"
    )
    assert error('{"instances": ["x", "y"]}', default="float").message == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "x" Type: String is not of expected type: float'
    )
    assert error('{"instances": [true]}', default="uint8").message.endswith(
        "JSON Value: true Type: True is not of expected type: uint8"
    )
    assert error('{"inputs": [[1], 2]}', default="int32").message == (
        "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
    )
    deeper = error('{"inputs": [1, [2]]}', default="int32").message
    assert deeper == "Encountered list at unexpected level: 1 expected < 1"
    assert error('{"inputs": [[1], [2, 3]]}', default="int32").message == (
        "Encountered list at unexpected size: 2 at level: 1 expected size: 1"
    )
    assert error('{"inputs": [{"b64": "!"}]}', default="string").message == "Unable to base64 decode"
    assert error('{"inputs": [{"b64": "aGk=", "x": 1}]}', default="string").message.endswith(
        "not formatted correctly for base64 data"
    )
    unimplemented = error('{"inputs": [1.0]}', default="half")
    assert unimplemented.status == 501 and unimplemented.message == "Conversion of JSON Value: 1.0 to type: half"


def test_integers_as_tf_serving_casts_them():
    """AddValueToTensor: a narrow integer type takes any int32 and casts it (wraps), a float or
    a value beyond the type's JSON range is a type error."""
    assert decode('{"instances": [255, 256, -1]}', default="uint8").inputs["default"].tolist() == [255, 0, 255]
    assert "not of expected type: int32" in error('{"instances": [1.0]}', default="int32").message
    assert "not of expected type: int32" in error('{"instances": [2147483648]}', default="int32").message
    assert decode('{"instances": [9223372036854775807]}', default="int64").inputs["default"].tolist() == [2**63 - 1]
    assert decode('{"instances": [true, false]}', default="bool").inputs["default"].tolist() == [True, False]
    assert "Type: Number is not of expected type: bool" in error('{"instances": [1]}', default="bool").message


@pytest.mark.parametrize(
    "instances,needle",
    [
        (
            '[{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]},'
            ' {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]',
            "Expecting shape",
        ),
        (
            '[{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},'
            ' {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]',
            "Expecting tensor size",
        ),
        (
            '[{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}, [1, 20, 30],'
            ' {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]',
            "Expecting object but got list",
        ),
        ('[{"int_tensor": [1], "str_tensor": ["a"], "x": [1]}]', "does not have named input: x"),
        ('[{"int_tensor": [1]}]', "keys must be equal to: int_tensor,str_tensor"),
        ("[[1, 2]]", "instances is a plain list, but expecting list of objects"),
    ],
)
def test_several_named_tensor_errors(instances, needle):
    """MultipleNamedTensorErrors."""
    assert needle in error(f'{{"instances": {instances}}}', int_tensor="int32", str_tensor="string").message


def test_value_or_object_errors():
    """MultipleNamedTensorErrors: a list first, then an object."""
    err = error('{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}', str_tensor="string")
    assert "Expecting value/list but got object" in err.message
    assert "Missing named input: b in 'inputs' object." in error('{"inputs": {"a": [1]}}', a="int32", b="int32").message
    assert "Missing 'inputs' or 'instances' key" in error("{}", a="int32").message
    assert "No values in 'instances' array" in error('{"instances": []}', a="int32").message
    assert "Is not object" in error("[1]", a="int32").message


# --- answers -------------------------------------------------------------------------------


def test_answers_of_one_tensor():
    """FromJsonSingleTensor, FromJsonSingleScalarTensor, FromJsonSingleBytesTensor."""
    ints = {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)}
    assert json.loads(encode_predict(ints, True)) == {"predictions": ints["int_tensor"].tolist()}
    assert json.loads(encode_predict(ints, False)) == {"outputs": ints["int_tensor"].tolist()}
    scalars = {"scalar": np.array([1, 2, 3, 4, 5], np.int32)}
    assert json.loads(encode_predict(scalars, True)) == {"predictions": [1, 2, 3, 4, 5]}
    assert json.loads(encode_predict(scalars, False)) == {"outputs": [1, 2, 3, 4, 5]}
    words = {"str_tensor_bytes": np.array([[b"hello", b"world"], [b"tf", b"serving"]], object)}
    assert json.loads(encode_predict(words, True)) == {
        "predictions": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]
    }


def test_floats_with_six_digits_and_non_finite_words():
    """FromJsonSingleFloatTensorSixDigitPrecision, FromJsonSingleFloatTensorNonFinite."""
    six = np.array([[9000000, 999999, 0.50000], [0.0003, 0.00003, 555557.5]], np.float32)
    expected = '{"predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}'
    same_text(encode_predict({"float_tensor": six}, True), expected)
    odd = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    same_text(encode_predict({"float_tensor": odd}, True), '{"predictions": [[NaN, Infinity], [3.0, -Infinity]]}')


def test_answer_errors():
    """FromJsonSingleTensorErrors, FromJsonMultipleNamedTensorsErrors."""
    for outputs, needle in [
        ({}, "empty tensor map"),
        ({"tensor": np.array([1, 2], np.complex64)}, "tensor type: complex64"),
        ({"tensor": np.array(1, np.int32)}, "no shape information"),
        ({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))}, "inconsistent batch size"),
    ]:
        with pytest.raises(ApiError) as err:
            encode_predict(outputs, True)
        assert err.value.status == 400 and needle in err.value.message


def test_answers_of_several_tensors_and_empty_batches():
    """FromJsonMultipleNamedTensors, FromJsonSingleZeroBatchTensor, ...MultipleZeroBatchTensors."""
    outputs = {"float_tensor": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), "int_tensor": np.array([1, 2], np.int64)}
    assert json.loads(encode_predict(outputs, True)) == {
        "predictions": [{"float_tensor": [1.0, 2.0], "int_tensor": 1}, {"float_tensor": [3.0, 4.0], "int_tensor": 2}]
    }
    assert json.loads(encode_predict(outputs, False)) == {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    assert json.loads(encode_predict({"t": np.zeros((0, 3), np.float32)}, True)) == {"predictions": []}
    empty = {"a": np.zeros((0, 3), np.float32), "b": np.zeros((0,), np.int32)}
    assert json.loads(encode_predict(empty, True)) == {"predictions": []}


# --- classify and regress ------------------------------------------------------------------


def parsed(examples) -> list[dict]:
    from google.protobuf import json_format
    from tensorflow.core.example import example_pb2

    found = []
    for data in examples.serialized:
        example = example_pb2.Example()
        example.ParseFromString(data)
        found.append(json_format.MessageToDict(example)["features"]["feature"])
    return found


def test_examples_without_context():
    """ClassifyRegressRequestTest.RequestNoContext."""
    body = (
        '{"examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},'
        ' {"names": ["baz"], "ratings": 6.0}]}'
    )
    first, second = parsed(decode_examples(jsonbody.parse(body.encode(), 100, 100)))
    assert first == {
        "names": {"bytesList": {"value": ["Zm9v", "YmFy"]}},
        "ratings": {"floatList": {"value": [8.0, 9.0]}},
        "age": {"int64List": {"value": ["20"]}},
    }
    assert second == {"names": {"bytesList": {"value": ["YmF6"]}}, "ratings": {"floatList": {"value": [6.0]}}}


def test_examples_with_context():
    """ClassifyRegressRequestTest.RequestWithContextAndSignature: each example is its context's
    bytes followed by its own (util.cc, InputToSerializedExampleTensor)."""
    body = (
        '{"signature_name": "custom_signture", "context": {"query": "pizza", "location": ["sfo"]},'
        ' "examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0, NaN, Infinity]}, {"names": ["baz"],'
        ' "ratings": 6.0, "query": "pasta"}]}'
    )
    payload = jsonbody.parse(body.encode(), 100, 100)
    assert signature_name(payload) == "custom_signture"
    first, second = parsed(decode_examples(payload))
    assert first["query"] == {"bytesList": {"value": ["cGl6emE="]}} and first["location"]
    assert first["ratings"]["floatList"]["value"][2:] == ["NaN", "Infinity"]
    assert second["query"] == {"bytesList": {"value": ["cGFzdGE="]}}  # the example's own wins


@pytest.mark.parametrize(
    "body,needle",
    [
        ('{"context": [{"names": ["foo", "bar"]}]}', "Example must be JSON object"),
        ('{"examples": {"names": ["foo", "bar"]}}', "list/array"),
        ('{"examples": [[{"names": ["foo", "bar"]}]]}', "Example must be JSON object"),
        ('{"examples": [{"names": [10, null]}]}', "names has element with unexpected JSON type: Null"),
        ('{"examples": [{"names": [10, 10.0]}]}', "feature: names expecting type: int64"),
        ('{"examples": [{"names": [10, {"test": 10}]}]}', "names has element with unexpected JSON type: Object"),
        ('{"examples": [{"names": [[10], 20]}]}', "names has element with unexpected JSON type: Array"),
        ('{"examples": [{"names": [20, 18446744073709551603]}]}', "Only int64_t is supported"),
        ("{}", "When method is classify, key 'examples' is expected and was not found"),
        ('{"examples": []}', "'examples' value is an empty array"),
    ],
)
def test_example_errors(body, needle):
    """ClassifyRegressRequestTest.JsonErrors."""
    with pytest.raises(ApiError) as err:
        decode_examples(jsonbody.parse(body.encode(), 100, 100))
    assert err.value.status == 400 and needle in err.value.message


def test_classify_and_regress_answers():
    """JsonFromClassificationResult, JsonFromRegressionResult, ...WithNonFinite, JsonFromResultErrors."""
    labels = np.array([[b"car", b"bike", b"bus"], [b"car", b"bike", b"bus"]], object)
    scores = np.array([[0.2, 0.7, 0.1], [0.7, 0.1, 0.2]], np.float32)
    assert json.loads(encode_classify(labels, scores)) == {
        "results": [[["car", 0.2], ["bike", 0.7], ["bus", 0.1]], [["car", 0.7], ["bike", 0.1], ["bus", 0.2]]]
    }
    assert json.loads(encode_regress(np.array([0.2, 0.9, 1.0], np.float32))) == {"results": [0.2, 0.9, 1.0]}
    odd = encode_regress(np.array([0.2, np.inf, 1.0, -np.inf, np.nan], np.float32))
    same_text(odd, '{ "results": [ 0.2, Infinity, 1.0, -Infinity, NaN ] }')
    for encode, args in ((encode_classify, (labels[:0], scores[:0])), (encode_regress, (scores[:0, 0],))):
        with pytest.raises(ApiError, match="empty (Classification|Regression)Results"):
            encode(*args)
