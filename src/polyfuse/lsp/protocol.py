"""The wire side of the language server: answering requests whose params do not deserialise, and reading a
client's positions and contexts (a mistake there is InvalidParams, never a crash)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol
from pygls.workspace import TextDocument, Workspace

__all__ = ["Protocol", "open_document", "offset_of", "check_inline_context"]

_ANSWERED = object()  # a malformed request that already got its error response


class Protocol(LanguageServerProtocol):
    """pygls logs a request whose params do not deserialise and never answers it, leaving the client waiting:
    answer it with the protocol error instead."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "id" in data and "method" in data:
                exc.message = f"invalid params for {data['method']}"
                self._send_response(data["id"], None, exc.to_response_error())
                return _ANSWERED
            raise

    def handle_message(self, message: Any) -> None:
        if message is not _ANSWERED:
            super().handle_message(message)


def open_document(workspace: Workspace, uri: str) -> TextDocument:
    """An open document; a request about one the client never opened is its mistake (pygls would read the file
    from disk, which may not be what the editor shows)."""
    if unquote(uri) not in workspace.text_documents:
        raise JsonRpcInvalidParams(f"document {uri} is not open: send textDocument/didOpen first")
    return workspace.get_text_document(uri)


def offset_of(doc: TextDocument, pos: types.Position) -> int:
    """The Python-string offset of a client position. Clients count characters in the negotiated encoding
    (UTF-16 code units by default), so "é😀x" puts x at character 3 for the client but index 2 for us."""
    lines = doc.source.split("\n")
    if not 0 <= pos.line < len(lines):
        raise JsonRpcInvalidParams(f"position {pos.line}:{pos.character} is outside the document")
    line = lines[pos.line]
    units = doc.position_codec.client_num_units(line)
    if not 0 <= pos.character <= units:
        raise JsonRpcInvalidParams(f"position {pos.line}:{pos.character} is outside the document")
    server = doc.position_codec.position_from_client_units(doc.lines, pos)
    return sum(len(ln) + 1 for ln in lines[: pos.line]) + server.character


def check_inline_context(doc: TextDocument, params: types.InlineCompletionParams) -> None:
    """The context's selected completion item must lie in the document and contain the cursor's line."""
    selected = params.context.selected_completion_info
    if selected is None:
        return
    start, end = selected.range.start, selected.range.end
    if (start.line, start.character) > (end.line, end.character):
        raise JsonRpcInvalidParams("context.selectedCompletionInfo.range ends before it starts")
    offset_of(doc, start)
    offset_of(doc, end)
