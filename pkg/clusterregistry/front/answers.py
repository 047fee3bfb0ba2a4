"""Responses in distribution's error format, so clients report the front's errors well.

containerd, skopeo and docker print the `message` of an `errors` entry; a
kubelet puts it into the pod's event. Messages name the source registry and
never its credentials.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

# distribution's error codes (registry/api/errcode and registry/api/v2)
MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
BLOB_UNKNOWN = "BLOB_UNKNOWN"
NAME_UNKNOWN = "NAME_UNKNOWN"
UNAVAILABLE = "UNAVAILABLE"
DENIED = "DENIED"
UNKNOWN = "UNKNOWN"
TOOMANYREQUESTS = "TOOMANYREQUESTS"
UNSUPPORTED = "UNSUPPORTED"


def error(status: int, code: str, message: str, *, method: str = "GET",
          headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
    sent = {"Docker-Distribution-API-Version": "registry/2.0", **(headers or {})}
    if method == "HEAD":
        # a HEAD answer has no body, but says how long the GET's would be
        sent["Content-Length"] = str(len(body))
        return web.Response(status=status, headers=sent, content_type="application/json")
    return web.Response(status=status, text=body, headers=sent,
                        content_type="application/json")
