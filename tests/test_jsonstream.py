import json

from polyfuse.fusion.jsonstream import FieldStreamer


def feed_in_pieces(doc: str, size: int) -> tuple[str, FieldStreamer]:
    s = FieldStreamer("answer")
    out = "".join(s.feed(doc[i : i + size]) for i in range(0, len(doc), size))
    return out, s


def test_streams_the_top_level_field_with_escapes_in_any_chunking():
    answer = 'Line one\n"quoted" \\ tab\t unicode é 😀 done'
    doc = json.dumps({"scores": {"A": {"score": 3, "reason": 'has "answer": "fake"'}}, "answer": answer})
    for size in (1, 2, 3, 7, 1000):
        out, s = feed_in_pieces(doc, size)
        assert out == answer, size
        assert s.done


def test_ignores_nested_and_escaped_lookalikes():
    doc = '{"scores": {"answer": "nested"}, "reason": "\\"answer\\": \\"x\\"", "answer": "real"}'
    out, _ = feed_in_pieces(doc, 4)
    assert out == "real"


def test_partial_answer_is_not_done():
    out, s = feed_in_pieces('{"agreement": 0.5, "answer": "half an ans', 5)
    assert out == "half an ans"
    assert not s.done
