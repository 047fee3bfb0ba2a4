"""The HTTP(S) face of kubesim: kube-apiserver's REST paths over aiohttp.

Routes follow the Kubernetes API concepts document: `/api/v1/...` for the
core group, `/apis/<group>/<version>/...` for the rest, `namespaces/<ns>/`
for namespaced resources, `/<subresource>` after a name, `?watch=1` turning
a list into a watch stream of newline-delimited JSON events. Content
negotiation covers JSON, server-side Tables and aggregated discovery.
Request bodies may also be Kubernetes protobuf (what client-go's typed
clients, kubectl's generators among them, send); responses are always JSON,
which every client accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from typing import Any

import msgspec
import yaml
from aiohttp import web

from kubesim import discovery, openapi, protobufs, statuses, tables
from kubesim.apiserver import ApiServer
from kubesim.resources import Resource
from kubesim.storage import Event, Obj

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
JSON = "application/json"
VERSION_INFO = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _json(body: Any, *, status: int = 200, content_type: str = JSON) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status,
                        headers={"Content-Type": content_type})


def _error(exc: statuses.ApiError) -> web.Response:
    return _json(exc.status(), status=exc.code)


def _wants(request: web.Request, marker: str) -> bool:
    return marker in request.headers.get("Accept", "")


def _table_requested(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


def _int(request: web.Request, name: str, default: int = 0) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise statuses.bad_request(f"invalid value for {name}: {raw!r}") from exc


class Route:
    """What a resource path names, parsed from the URL."""

    __slots__ = ("name", "namespace", "resource", "subresource")

    def __init__(
        self, resource: Resource, namespace: str | None, name: str | None, subresource: str | None
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.name = name
        self.subresource = subresource


class Server:
    """kubesim over HTTP(S) on 127.0.0.1."""

    def __init__(
        self,
        api: ApiServer,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        bookmark_interval: float = 10.0,
        min_request_timeout: float = 1800.0,
    ) -> None:
        self.api = api
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.bookmark_interval = bookmark_interval
        self.min_request_timeout = min_request_timeout
        self._runner: web.AppRunner | None = None
        self._watches: set[asyncio.Task[Any]] = set()
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context,
                           backlog=1024)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in list(self._watches):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- dispatch ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except statuses.ApiError as exc:
            return _error(exc)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("request %s %s failed", request.method, request.path)
            return _error(statuses.internal(f"Internal error occurred: {exc}"))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/version":
            return _json(VERSION_INFO)
        if path == "/api":
            if _wants(request, "as=APIGroupDiscoveryList"):
                return self._aggregated(request, core=True)
            return _json(discovery.api_versions(f"{self.host}:{self.port}"))
        if path == "/apis":
            if _wants(request, "as=APIGroupDiscoveryList"):
                return self._aggregated(request, core=False)
            return _json(discovery.api_group_list(self.api.registry))
        if parts[:2] == ["openapi", "v3"]:
            return self._openapi(parts[2:])
        if parts and parts[0] in ("openapi", "swagger.json"):
            # only OpenAPI v3 is published; kubectl no longer needs v2 when v3 is there
            raise statuses.ApiError(404, "NotFound", "the server could not find the requested "
                                    "resource")
        if parts[:2] == ["api", "v1"] and len(parts) == 2:
            return self._resource_list("", "v1")
        if parts and parts[0] == "apis" and len(parts) == 2:
            resources = self.api.registry.groups().get(parts[1])
            if not resources:
                raise statuses.ApiError(404, "NotFound", "the server could not find the "
                                        "requested resource")
            return _json(discovery.api_group(parts[1], resources))
        if parts and parts[0] == "apis" and len(parts) == 3:
            return self._resource_list(parts[1], parts[2])
        route = self._route(parts)
        return await self._serve(request, route)

    def _openapi(self, rest: list[str]) -> web.Response:
        if not rest:
            return _json(openapi.index(self.api.registry))
        if rest[0] == "api" and len(rest) == 2:
            doc = openapi.group_version_document(self.api.registry, "", rest[1])
        elif rest[0] == "apis" and len(rest) == 3:
            doc = openapi.group_version_document(self.api.registry, rest[1], rest[2])
        else:
            doc = None
        if doc is None:
            raise statuses.ApiError(404, "NotFound", "the server could not find the requested "
                                    "resource")
        return _json(doc)

    def _aggregated(self, request: web.Request, *, core: bool) -> web.Response:
        accept = request.headers.get("Accept", "")
        if "v=v2;" in accept or accept.endswith("v=v2") or "v=v2," in accept:
            content_type, version = discovery.AGGREGATED_V2, "v2"
        else:
            content_type, version = discovery.AGGREGATED_V2BETA1, "v2beta1"
        return _json(discovery.aggregated(self.api.registry, core=core, api_version=version),
                     content_type=content_type)

    def _resource_list(self, group: str, version: str) -> web.Response:
        body = discovery.api_resource_list(self.api.registry, group, version)
        if body is None:
            raise statuses.ApiError(404, "NotFound", "the server could not find the requested "
                                    "resource")
        return _json(body)

    def _route(self, parts: list[str]) -> Route:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts and parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise statuses.ApiError(404, "NotFound", "the server could not find the requested "
                                    "resource")
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = self.api.registry.lookup(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise statuses.ApiError(404, "NotFound", "the server could not find the requested "
                                    "resource")
        resource = self.api.registry.lookup(group, version, rest[0])
        if resource is None:
            raise statuses.ApiError(404, "NotFound", "the server could not find the requested "
                                    "resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource is not None and subresource not in resource.subresources:
            raise statuses.ApiError(404, "NotFound", "the server could not find the requested "
                                    "resource")
        if namespace is not None and not resource.namespaced:
            raise statuses.ApiError(404, "NotFound", "the server could not find the requested "
                                    "resource")
        return Route(resource, namespace, name, subresource)

    # -- verbs -------------------------------------------------------------------------------

    async def _serve(self, request: web.Request, route: Route) -> web.StreamResponse:
        method = request.method
        resource = route.resource
        dry_run = request.query.get("dryRun") == "All"
        if route.name is None:
            if method == "GET":
                if _flag(request, "watch"):
                    return await self._watch(request, route)
                return self._list(request, route)
            if method == "POST":
                body = await self._body(request)
                created = await self.api.create(resource, body, namespace=route.namespace,
                                                dry_run=dry_run)
                return self._object(request, resource, created, status=201)
            if method == "DELETE":
                return await self._delete_collection(request, route, dry_run=dry_run)
            raise statuses.method_not_allowed(f"{method} is not supported on a collection")
        if route.subresource == "scale":
            return await self._scale(request, route, dry_run=dry_run)
        if route.subresource == "binding" and method == "POST":
            body = await self._body(request)
            status = await self.api.create(resource, body, namespace=route.namespace,
                                           subresource="binding", name=route.name,
                                           dry_run=dry_run)
            return _json(status, status=201)
        if method == "GET":
            obj = self.api.get_stored(resource, namespace=route.namespace, name=route.name)
            return self._object(request, resource, obj)
        if method == "PUT":
            body = await self._body(request)
            updated = await self.api.update(
                resource, body, subresource=route.subresource, dry_run=dry_run,
                namespace=route.namespace, name=route.name,
            )
            return self._object(request, resource, updated)
        if method == "PATCH":
            patch_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            body = await self._body(request, allow_list=True)
            patched = await self.api.patch(
                resource, namespace=route.namespace, name=route.name, patch=body,
                patch_type=patch_type, subresource=route.subresource, dry_run=dry_run,
            )
            return self._object(request, resource, patched)
        if method == "DELETE":
            options = await self._delete_options(request)
            deleted = await self.api.delete(
                resource, namespace=route.namespace, name=route.name,
                propagation_policy=options.get("propagationPolicy"),
                preconditions=options.get("preconditions"),
                grace_period_seconds=options.get("gracePeriodSeconds"),
                dry_run=dry_run or options.get("dryRun") == ["All"],
            )
            still_there = bool(deleted["metadata"].get("deletionTimestamp")) and (
                self.api.store.get(resource, (route.namespace or "", route.name)) is not None
            )
            return self._object(request, resource, deleted, status=202 if still_there else 200)
        raise statuses.method_not_allowed(f"{method} is not supported")

    async def _scale(self, request: web.Request, route: Route, *,
                     dry_run: bool) -> web.Response:
        """The scale subresource speaks autoscaling/v1 Scale, whatever the owner's kind."""
        assert route.name is not None
        if request.method == "GET":
            return _json(self.api.get_scale(route.resource, namespace=route.namespace,
                                            name=route.name))
        if request.method in ("PUT", "PATCH"):
            body = await self._body(request, allow_list=request.method == "PATCH")
            patch_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            scale = await self.api.update_scale(
                route.resource, namespace=route.namespace, name=route.name, body=body,
                patch_type=patch_type if request.method == "PATCH" else None, dry_run=dry_run,
            )
            return _json(scale)
        raise statuses.method_not_allowed(f"{request.method} is not supported on scale")

    async def _body(self, request: web.Request, *, allow_list: bool = False) -> Any:
        raw = await request.read()
        if not raw:
            raise statuses.bad_request("the request body is empty")
        content_type = request.headers.get("Content-Type", "")
        try:
            if "protobuf" in content_type:
                # kubectl's generators and typed client-go clients send built-in types as
                # protobuf and never retry with JSON; 415/400 for what cannot be decoded
                body = protobufs.decode(raw)
            elif "yaml" in content_type and "apply-patch" not in content_type:
                body = yaml.safe_load(raw)
            else:
                body = msgspec.json.decode(raw)
        except (msgspec.DecodeError, yaml.YAMLError) as exc:
            raise statuses.bad_request(f"the body of the request could not be decoded: {exc}") \
                from exc
        if isinstance(body, list) and allow_list:
            return body
        if not isinstance(body, dict):
            raise statuses.bad_request("the body of the request must be a JSON object")
        return body

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        options: dict[str, Any] = {}
        raw = await request.read()
        if raw:
            if "protobuf" in request.headers.get("Content-Type", ""):
                decoded: Any = protobufs.decode(raw)  # typed client-go deletes
            else:
                try:
                    decoded = msgspec.json.decode(raw)
                except msgspec.DecodeError as exc:
                    raise statuses.bad_request(f"invalid DeleteOptions: {exc}") from exc
            if isinstance(decoded, dict):
                options.update(decoded)
        if "propagationPolicy" in request.query:
            options["propagationPolicy"] = request.query["propagationPolicy"]
        if "gracePeriodSeconds" in request.query:
            options["gracePeriodSeconds"] = _int(request, "gracePeriodSeconds")
        if options.get("orphanDependents") is True and "propagationPolicy" not in options:
            options["propagationPolicy"] = "Orphan"
        return options

    def _object(self, request: web.Request, resource: Resource, obj: Obj, *,
                status: int = 200) -> web.Response:
        if _table_requested(request) and request.method == "GET":
            return _json(tables.to_table(resource, [obj], include_object=self._include(request)),
                         status=status)
        return _json(obj, status=status)

    @staticmethod
    def _include(request: web.Request) -> str:
        return request.query.get("includeObject", "Metadata")

    def _list(self, request: web.Request, route: Route) -> web.Response:
        resource = route.resource
        items, rv, token, remaining = self.api.list_stored(
            resource, namespace=route.namespace,
            label_selector=request.query.get("labelSelector", ""),
            field_selector=request.query.get("fieldSelector", ""),
            limit=_int(request, "limit"), continue_token=request.query.get("continue") or None,
        )
        metadata: dict[str, Any] = {"resourceVersion": str(rv)}
        if token:
            metadata["continue"] = token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
        if _table_requested(request):
            return _json(tables.to_table(resource, items, list_metadata=metadata,
                                         include_object=self._include(request)))
        if resource.is_custom:
            # all versions share storage; serve the requested version's apiVersion
            items = [i if i.get("apiVersion") == resource.api_version else
                     {**i, "apiVersion": resource.api_version} for i in items]
        return _json({"apiVersion": resource.api_version, "kind": resource.list_kind,
                      "metadata": metadata, "items": items})

    async def _delete_collection(self, request: web.Request, route: Route, *,
                                 dry_run: bool) -> web.Response:
        resource = route.resource
        options = await self._delete_options(request)
        items, _, _, _ = self.api.list_stored(
            resource, namespace=route.namespace,
            label_selector=request.query.get("labelSelector", ""),
            field_selector=request.query.get("fieldSelector", ""),
        )
        deleted = []
        for item in list(items):
            with contextlib.suppress(statuses.ApiError):
                deleted.append(await self.api.delete(
                    resource, namespace=item["metadata"].get("namespace"),
                    name=item["metadata"]["name"],
                    propagation_policy=options.get("propagationPolicy"),
                    grace_period_seconds=options.get("gracePeriodSeconds"), dry_run=dry_run,
                ))
        return _json({"apiVersion": resource.api_version, "kind": resource.list_kind,
                      "metadata": {"resourceVersion": str(self.api.store.rv)},
                      "items": deleted})

    # -- watch -------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, route: Route) -> web.StreamResponse:
        resource = route.resource
        timeout = float(_int(request, "timeoutSeconds", 0)) or (
            # kube-apiserver spreads unbounded watches over [min, 2*min) request timeout
            self.min_request_timeout * (1 + random.random())
        )
        bookmarks = _flag(request, "allowWatchBookmarks")
        send_initial_raw = request.query.get("sendInitialEvents")
        send_initial = None if send_initial_raw is None else send_initial_raw.lower() == "true"
        table = _table_requested(request)
        include = self._include(request)
        response = web.StreamResponse(status=200, headers={
            "Content-Type": JSON, "Transfer-Encoding": "chunked", "Cache-Control": "no-cache",
        })
        try:
            watch = self.api.watch(
                resource, namespace=route.namespace,
                resource_version=request.query.get("resourceVersion") or None,
                label_selector=request.query.get("labelSelector", ""),
                field_selector=request.query.get("fieldSelector", ""),
                send_initial_events=send_initial,
            )
        except statuses.ApiError as exc:
            if exc.code != 410:
                raise
            # kube-apiserver reports an expired resourceVersion inside the stream: HTTP 200
            # and a single ERROR event carrying the 410 Status, then the stream ends.
            await response.prepare(request)
            await response.write(_encoder.encode({"type": "ERROR", "object": exc.status()})
                                 + b"\n")
            await response.write_eof()
            return response
        await response.prepare(request)
        task = asyncio.current_task()
        if task is not None:
            self._watches.add(task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + self.bookmark_interval
        headers_sent = False
        initial_pending = bool(send_initial and bookmarks)

        def encode(event: Event) -> bytes:
            nonlocal headers_sent
            if not table:
                return event.encode(resource.api_version if resource.is_custom else None)
            body = tables.to_table(resource, [event.object], include_object=include,
                                   headers=not headers_sent)
            headers_sent = True
            return _encoder.encode({"type": event.type, "object": body}) + b"\n"

        def bookmark(annotations: dict[str, str] | None = None) -> bytes:
            meta: dict[str, Any] = {"resourceVersion": str(max(watch.last_rv, 0))}
            if annotations:
                meta["annotations"] = annotations
            return _encoder.encode({"type": "BOOKMARK", "object": {
                "kind": resource.kind, "apiVersion": resource.api_version, "metadata": meta,
            }}) + b"\n"

        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    break
                wait = min(deadline, next_bookmark) - now if bookmarks else deadline - now
                ready = await watch.wait(max(wait, 0.0))
                # a bounded chunk per write: a long backlog (a resumed watch replaying its
                # history) reaches the client as it is encoded, not after all of it
                events = watch.drain(500)
                if events:
                    await response.write(b"".join(encode(e) for e in events))
                if initial_pending and not watch.pending:
                    initial_pending = False
                    # the end of initial events (WatchList): a bookmark so annotated
                    await response.write(bookmark({"k8s.io/initial-events-end": "true"}))
                if watch.closed and not watch.pending:
                    break
                if bookmarks and loop.time() >= next_bookmark:
                    await response.write(bookmark())
                    next_bookmark = loop.time() + self.bookmark_interval
                if not ready and not bookmarks:
                    continue
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            watch.close()
            if task is not None:
                self._watches.discard(task)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

