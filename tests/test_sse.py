from polyfuse.providers.sse import iter_sse_data


async def lines(*items: bytes):
    for item in items:
        yield item


async def collect(*items: bytes) -> list[str]:
    return [d async for d in iter_sse_data(lines(*items))]


async def test_data_events_comments_and_crlf():
    got = await collect(
        b": OPENROUTER PROCESSING\n",
        b"\n",
        b'data: {"a": 1}\r\n',
        b"\r\n",
        b"event: message\n",
        b"id: 7\n",
        b"data:no-space\n",
        b"\n",
        b"data: [DONE]\n",
        b"\n",
    )
    assert got == ['{"a": 1}', "no-space", "[DONE]"]


async def test_multiline_data_and_unterminated_last_event():
    assert await collect(b"data: one\n", b"data: two\n", b"\n", b"data: tail\n") == ["one\ntwo", "tail"]
