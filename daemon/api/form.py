"""The chart PNG of a multipart/form-data /predict body, read by python-multipart as it streams."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header


class _FormParts:
    """What python-multipart's callbacks hand over: each part's headers, then its data."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[bytes, bytes], bytearray]] = []
        self.ended = False
        self._name = b""
        self._value = b""

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_name,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_part_data": self._data,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self.parts.append(({}, bytearray()))

    def _header_name(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self.parts[-1][0][self._name.strip().lower()] = self._value.strip()
        self._name = self._value = b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1][1].extend(data[start:end])

    def _end(self) -> None:
        self.ended = True


async def multipart_png(request: Request) -> bytes:
    """The PNG of a multipart/form-data body, parsed by python-multipart as the body streams in
    (BodyLimit has already refused one over the limit): the field `file` (or `chart`), else the
    one image/png part."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(422, detail="body: not a multipart/form-data body with a boundary")
    form = _FormParts()
    parser = MultipartParser(boundary, callbacks=form.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise HTTPException(422, detail=f"body: malformed multipart/form-data ({first})") from None
    if not form.ended:
        raise HTTPException(
            422, detail="body: multipart/form-data ends before its closing boundary"
        )
    for headers, data in form.parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        kind, _ = parse_options_header(headers.get(b"content-type", b""))
        if data and (disposition.get(b"name") in (b"file", b"chart") or kind == b"image/png"):
            return bytes(data)
    raise HTTPException(422, detail="body: no form field `file` holding a chart PNG")
