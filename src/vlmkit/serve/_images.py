"""Images of a request: ``data:`` URIs and local files below the allowed directories, nothing else.

No network fetches: an ``http(s)://`` URL is refused. A path (plain or ``file://``) is resolved with
its symlinks and must lie below one of the ``--allow-dir`` directories, so ``..`` and links that
point out are refused too. An image's pixel count is checked from its header before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlparse

from vlmkit.serve._errors import APIError


def open_image_url(
    url: str, *, allow_dirs: Sequence[Path], max_pixels: int, max_bytes: int, param: str
) -> Any:
    """The RGB PIL image ``url`` names; :class:`APIError` (400, 403, 413) naming the problem."""
    if url.startswith("data:"):
        data = _decode_data_uri(url, param)
    elif url.startswith(("http://", "https://", "ftp://")):
        raise APIError(
            400,
            f"{param}: remote image URLs are not fetched by this server; send the "
            "image as a data: URI (data:image/png;base64,...)",
            param=param,
            code="invalid_image_url",
        )
    else:
        data = _read_allowed_file(url, allow_dirs, max_bytes, param)
    return _decode(data, max_pixels, param)


def _decode_data_uri(url: str, param: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise APIError(
            400,
            f"{param}: a data: URI must look like data:image/png;base64,<data>",
            param=param,
            code="invalid_image_url",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(
            400,
            f"{param}: the data: URI's base64 payload does not decode",
            param=param,
            code="invalid_image_url",
        ) from None


def _read_allowed_file(url: str, allow_dirs: Sequence[Path], max_bytes: int, param: str) -> bytes:
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise APIError(
                400,
                f"{param}: file:// URLs must name a local path",
                param=param,
                code="invalid_image_url",
            )
        raw = unquote(parsed.path)
    elif "://" in url:
        raise APIError(
            400,
            f"{param}: unsupported URL scheme {url.split('://')[0]!r}; use a data: URI",
            param=param,
            code="invalid_image_url",
        )
    else:
        raw = url
    if not allow_dirs:
        raise APIError(
            403,
            f"{param}: local image paths are disabled (start the server with "
            "--allow-dir DIR to allow files below DIR)",
            param=param,
            code="path_not_allowed",
        )
    path = Path(os.path.expanduser(raw))
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise APIError(
            400, f"{param}: no such image file: {raw}", param=param, code="image_not_found"
        ) from None
    if not any(resolved.is_relative_to(d) for d in allow_dirs):
        raise APIError(
            403,
            f"{param}: {raw} is outside the allowed directories (--allow-dir)",
            param=param,
            code="path_not_allowed",
        )
    if not resolved.is_file():
        raise APIError(400, f"{param}: not a file: {raw}", param=param, code="image_not_found")
    if resolved.stat().st_size > max_bytes:
        raise APIError(
            413,
            f"{param}: the file is larger than {max_bytes} bytes (--max-request-bytes)",
            param=param,
            code="image_too_large",
        )
    return resolved.read_bytes()


def _decode(data: bytes, max_pixels: int, param: str) -> Any:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        raise APIError(
            400,
            f"{param}: the image cannot be decoded (not a PNG, JPEG or other image "
            "format PIL reads)",
            param=param,
            code="invalid_image",
        ) from None
    if width * height > max_pixels:
        raise APIError(
            413,
            f"{param}: the image has {width}x{height} = {width * height} pixels, more "
            f"than the {max_pixels} allowed (--max-image-pixels)",
            param=param,
            code="image_too_large",
        )
    try:
        return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise APIError(
            400,
            f"{param}: the image data is truncated or corrupt",
            param=param,
            code="invalid_image",
        ) from None
