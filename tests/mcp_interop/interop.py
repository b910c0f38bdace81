#!/usr/bin/env python3
"""Tether's MCP endpoint driven by the official Python MCP SDK (`mcp` 2.3.0, see requirements.txt).

    python interop.py --url http://127.0.0.1:PORT/mcp --key KEY --rest http://127.0.0.1:PORT/api/mcp

Three stories, each a list of named checks:
  legacy   protocol sessions (mode="legacy"): the MCP session id is the Tether session id; a second
           MCP session resumes the first one's session with its reconnect token.
  current  mode="auto", which negotiates 2026-07-28 (no protocol sessions): a handle from
           open_session plus the session's current token.
  bad-args arguments the tools' input schemas refuse, and what the SDK surfaces for them.

Prints one line per check and, last, exactly `N passed, M failed`; exits 1 if any check failed.
Needs a fresh or at least quiet server: the bad-args checks count the sessions in the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import traceback
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Implementation

CLIENT_NAME = "python-interop"
CLIENT_VERSION = "0.1"
TOOLS = {"session_info", "get_reconnect_token", "reconnect_session", "end_session", "open_session"}
MODERN = "2026-07-28"
HANDSHAKE_ERA = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}
OVERALL_TIMEOUT_S = 100


class Checks:
    """Named assertions: a failure is recorded and reported, and the story goes on where it can."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS  {name}")
        else:
            self.failed.append(name)
            print(f"FAIL  {name}: {detail}")
        return ok

    def equal(self, name: str, actual: Any, expected: Any) -> bool:
        return self.check(name, actual == expected, f"expected {expected!r}, got {actual!r}")

    def crashed(self, story: str, exc: BaseException) -> None:
        self.failed.append(f"{story} (crashed)")
        print(f"FAIL  {story} crashed: {exc!r}")
        traceback.print_exc()


def ok_result(c: Checks, name: str, r: CallToolResult) -> dict[str, Any]:
    """A successful tool call's structured content (the SDK has already checked it against the
    tool's output schema)."""
    c.check(f"{name}: succeeds", not r.is_error and isinstance(r.structured_content, dict),
            f"is_error={r.is_error} structured={r.structured_content} content={r.content}")
    return r.structured_content or {}


def tool_error(c: Checks, name: str, r: CallToolResult, code: str) -> None:
    """A tool error (isError) carrying the contract's structured failure with `code`."""
    sc = r.structured_content or {}
    c.check(f"{name}: tool error with code {code}",
            r.is_error and sc.get("success") is False and sc.get("code") == code
            and isinstance(sc.get("detail"), str),
            f"is_error={r.is_error} structured={r.structured_content} content={r.content}")


class Rest:
    """The REST API, to see from outside what the MCP calls did."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base.rstrip("/")
        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=20)

    async def session(self, sid: str) -> tuple[int, dict[str, Any]]:
        r = await self.http.get(f"{self.base}/sessions/{sid}")
        return r.status_code, r.json()

    async def count(self) -> int:
        """Every session in the registry, all pages."""
        n, cursor = 0, None
        while True:
            params = {"limit": "500"} | ({"cursor": cursor} if cursor else {})
            r = await self.http.get(f"{self.base}/sessions", params=params)
            r.raise_for_status()
            body = r.json()
            n += len(body["sessions"])
            cursor = body.get("next_cursor")
            if not cursor:
                return n


@asynccontextmanager
async def connect(url: str, key: str, mode: str, *, terminate_on_close: bool = True
                  ) -> AsyncIterator[tuple[Client, dict[str, str]]]:
    """An SDK client and what it saw of the `mcp-session-id` header (key "id", once issued)."""
    seen: dict[str, str] = {}

    async def on_response(response: httpx2.Response) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid:
            seen.setdefault("id", sid)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"},
                              event_hooks={"response": [on_response]}, timeout=30)
    async with http:
        transport = streamable_http_client(url, http_client=http,
                                           terminate_on_close=terminate_on_close)
        client = Client(transport, mode=mode, read_timeout_seconds=30,
                        client_info=Implementation(name=CLIENT_NAME, version=CLIENT_VERSION))
        async with client:
            yield client, seen


async def tools_listed(c: Checks, era: str, client: Client) -> None:
    listed = (await client.list_tools()).tools
    names = {t.name for t in listed}
    c.check(f"{era}: tools/list has the 5 session tools", TOOLS <= names, sorted(names))
    for t in listed:
        if t.name in TOOLS:
            c.check(f"{era}: {t.name} has an output schema",
                    isinstance(t.output_schema, dict) and t.output_schema.get("type") == "object",
                    t.output_schema)


async def legacy_story(c: Checks, url: str, key: str, rest: Rest) -> None:
    era = "legacy"
    # The first client goes away without HTTP DELETE, as one whose network dropped would: a DELETE
    # would end its session, and there would be nothing to resume.
    async with connect(url, key, "legacy", terminate_on_close=False) as (first, seen):
        c.check(f"{era}: handshake-era protocol version ({first.protocol_version})",
                first.protocol_version in HANDSHAKE_ERA, first.protocol_version)
        sid = seen.get("id", "")
        c.check(f"{era}: initialize answered an mcp-session-id header", bool(sid), seen)
        await tools_listed(c, era, first)

        info = ok_result(c, f"{era}: session_info", await first.call_tool("session_info", {}))
        c.equal(f"{era}: session_info.session_id is the mcp-session-id", info.get("session_id"), sid)
        c.equal(f"{era}: client_type is the clientInfo name", info.get("client_type"), CLIENT_NAME)
        c.equal(f"{era}: client_version is the clientInfo version", info.get("client_version"),
                CLIENT_VERSION)
        c.equal(f"{era}: status active", info.get("status"), "active")
        c.equal(f"{era}: reconnect_count 0", info.get("reconnect_count"), 0)
        c.equal(f"{era}: metadata.mcp.protocol_version is the negotiated one",
                (info.get("metadata") or {}).get("mcp", {}).get("protocol_version"),
                first.protocol_version)

        status, row = await rest.session(sid)
        c.check(f"{era}: REST GET /sessions/{{id}} shows it",
                status == 200 and row.get("session_id") == sid
                and row.get("client_type") == CLIENT_NAME and row.get("status") == "active",
                (status, row))

        g1 = ok_result(c, f"{era}: get_reconnect_token",
                       await first.call_tool("get_reconnect_token", {}))
        c.equal(f"{era}: the token is for this session", g1.get("session_id"), sid)
        c.check(f"{era}: expires_in_minutes positive",
                isinstance(g1.get("expires_in_minutes"), int) and g1["expires_in_minutes"] > 0, g1)
        superseded = g1.get("reconnect_token", "")
        g2 = ok_result(c, f"{era}: get_reconnect_token again",
                       await first.call_tool("get_reconnect_token", {}))
        token = g2.get("reconnect_token", "")
        c.check(f"{era}: a new token each time", bool(token) and token != superseded)

    async with connect(url, key, "legacy") as (second, seen2):
        sid2 = seen2.get("id", "")
        c.check(f"{era}: the second client has its own MCP session", bool(sid2) and sid2 != sid,
                (sid, sid2))

        r = await second.call_tool("reconnect_session", {"session_id": sid, "token": superseded})
        tool_error(c, f"{era}: reconnect with the replaced token", r, "token_mismatch")

        r = await second.call_tool("reconnect_session", {"session_id": sid, "token": token})
        resumed = ok_result(c, f"{era}: reconnect_session from the second MCP session", r)
        c.equal(f"{era}: reconnect success", resumed.get("success"), True)
        c.equal(f"{era}: reconnect session_id", resumed.get("session_id"), sid)
        c.equal(f"{era}: reconnect message", resumed.get("message"), "Session reconnected")
        c.equal(f"{era}: reconnect_count 1", resumed.get("reconnect_count"), 1)
        rotated = resumed.get("reconnect_token", "")
        c.check(f"{era}: a rotated token", bool(rotated) and rotated != token)

        info = ok_result(c, f"{era}: session_info after resuming",
                         await second.call_tool("session_info", {}))
        c.equal(f"{era}: the second MCP session now acts on the first session",
                info.get("session_id"), sid)
        c.equal(f"{era}: with reconnect_count 1", info.get("reconnect_count"), 1)

        status, own = await rest.session(sid2)
        c.check(f"{era}: the second MCP session's own session ended as resumed:<id>",
                status == 200 and own.get("status") == "disconnected"
                and own.get("disconnect_reason") == f"resumed:{sid}", (status, own))

        r = await second.call_tool("reconnect_session", {"session_id": sid, "token": token})
        tool_error(c, f"{era}: replaying the spent token", r, "token_reused")
        r = await second.call_tool("reconnect_session", {"session_id": sid, "token": rotated})
        c.check(f"{era}: the rotated token was revoked with it", r.is_error,
                r.structured_content)
        status, row = await rest.session(sid)
        c.check(f"{era}: REST: still active, reconnect_count 1",
                status == 200 and row.get("status") == "active"
                and row.get("reconnect_count") == 1, (status, row))

        ended = ok_result(c, f"{era}: end_session", await second.call_tool("end_session", {}))
        c.equal(f"{era}: end_session ended the resumed session", ended.get("session_id"), sid)
        c.equal(f"{era}: status disconnected", ended.get("status"), "disconnected")
        c.equal(f"{era}: disconnect_reason client_closed", ended.get("disconnect_reason"),
                "client_closed")
        status, row = await rest.session(sid)
        c.check(f"{era}: REST shows it disconnected",
                status == 200 and row.get("status") == "disconnected", (status, row))


async def current_story(c: Checks, url: str, key: str, rest: Rest) -> None:
    era = "current"
    async with connect(url, key, "auto") as (client, seen):
        version = client.protocol_version
        print(f"negotiated protocol version (mode=auto): {version}")
        c.equal(f"{era}: mode=auto negotiates {MODERN}", version, MODERN)
        c.check(f"{era}: no protocol session (no mcp-session-id header)", "id" not in seen, seen)
        await tools_listed(c, era, client)

        r = await client.call_tool("session_info", {})
        tool_error(c, f"{era}: session_info without handle or protocol session", r,
                   "invalid_request")

        opened = ok_result(c, f"{era}: open_session", await client.call_tool("open_session", {
            "client_type": "python-interop-current", "client_version": "1.0",
            "principal": "alice", "metadata": {"team": "core"}}))
        sid, t1 = opened.get("session_id", ""), opened.get("reconnect_token", "")
        c.check(f"{era}: open_session returns a handle and a token", bool(sid) and bool(t1), opened)
        c.equal(f"{era}: open_session status active", opened.get("status"), "active")

        info = ok_result(c, f"{era}: session_info with handle + token",
                         await client.call_tool("session_info", {"session_id": sid, "token": t1}))
        c.equal(f"{era}: session_info is the opened session", info.get("session_id"), sid)
        c.check(f"{era}: session_info shows what open_session was given",
                info.get("client_type") == "python-interop-current"
                and info.get("client_version") == "1.0" and info.get("principal") == "alice"
                and info.get("metadata") == {"team": "core"} and info.get("reconnect_count") == 0
                and info.get("status") == "active", info)
        status, row = await rest.session(sid)
        c.check(f"{era}: REST GET /sessions/{{id}} shows it",
                status == 200 and row.get("client_type") == "python-interop-current", (status, row))

        r = await client.call_tool("session_info", {"session_id": sid})
        tool_error(c, f"{era}: session_info with handle, no token", r, "invalid_request")
        r = await client.call_tool("session_info", {"session_id": sid, "token": "not-a-token"})
        tool_error(c, f"{era}: session_info with a wrong token", r, "invalid_token")
        r = await client.call_tool("open_session", {"metadata": {"mcp": {"x": 1}}})
        tool_error(c, f"{era}: open_session with the reserved metadata key", r, "invalid_request")

        grant = ok_result(c, f"{era}: get_reconnect_token with handle",
                          await client.call_tool("get_reconnect_token",
                                                 {"session_id": sid, "token": t1}))
        t2 = grant.get("reconnect_token", "")
        c.check(f"{era}: get_reconnect_token mints a new token",
                bool(t2) and t2 != t1 and grant.get("session_id") == sid, grant)
        r = await client.call_tool("session_info", {"session_id": sid, "token": t1})
        tool_error(c, f"{era}: the replaced token no longer works", r, "token_mismatch")
        ok_result(c, f"{era}: the new token works",
                  await client.call_tool("session_info", {"session_id": sid, "token": t2}))

        resumed = ok_result(c, f"{era}: reconnect_session",
                            await client.call_tool("reconnect_session",
                                                   {"session_id": sid, "token": t2}))
        t3 = resumed.get("reconnect_token", "")
        c.check(f"{era}: reconnect rotates the token", bool(t3) and t3 not in (t1, t2), resumed)
        c.equal(f"{era}: reconnect_count 1", resumed.get("reconnect_count"), 1)
        c.equal(f"{era}: reconnect message", resumed.get("message"), "Session reconnected")
        info = ok_result(c, f"{era}: session_info with the rotated token",
                         await client.call_tool("session_info", {"session_id": sid, "token": t3}))
        c.equal(f"{era}: session_info reconnect_count 1", info.get("reconnect_count"), 1)

        r = await client.call_tool("reconnect_session", {"session_id": sid, "token": t2})
        tool_error(c, f"{era}: the old token is now reused", r, "token_reused")
        r = await client.call_tool("session_info", {"session_id": sid, "token": t3})
        c.check(f"{era}: reuse revoked the live token too", r.is_error, r.structured_content)

        fresh = ok_result(c, f"{era}: open_session (fresh handle)",
                          await client.call_tool("open_session", {}))
        fid, ft = fresh.get("session_id", ""), fresh.get("reconnect_token", "")
        ended = ok_result(c, f"{era}: end_session with handle",
                          await client.call_tool("end_session", {"session_id": fid, "token": ft}))
        c.check(f"{era}: end_session ended it (disconnected, client_closed)",
                ended.get("session_id") == fid and ended.get("status") == "disconnected"
                and ended.get("disconnect_reason") == "client_closed", ended)
        status, row = await rest.session(fid)
        c.check(f"{era}: REST shows it disconnected",
                status == 200 and row.get("status") == "disconnected", (status, row))
        r = await client.call_tool("end_session", {"session_id": fid, "token": ft})
        tool_error(c, f"{era}: ending it again", r, "session_already_disconnected")

        # open_session without client_type should record the client's name: on 2026-07-28 the
        # client sends it in every request's _meta (io.modelcontextprotocol/clientInfo).
        recorded = (await rest.session(fid))[1].get("client_type")
        c.equal(f"{era}: open_session without client_type records the clientInfo name",
                recorded, CLIENT_NAME)


async def bad_args_story(c: Checks, url: str, key: str, rest: Rest) -> None:
    """Arguments the input schemas refuse (additionalProperties false, typed fields). The SDK sends
    them as given (it does not validate inputs); what comes back is asserted, and nothing may be
    created."""
    cases = [
        ("session_info", {"colour": "red"}, "colour"),
        ("session_info", {"session_id": 5}, "integer"),
        ("open_session", {"metadata": "not-an-object"}, "expected a map"),
        ("open_session", {"client_type": "x", "extra": 1}, "extra"),
        ("reconnect_session", {"session_id": "s"}, "token"),
    ]
    for mode in ("legacy", "auto"):
        era = f"bad-args/{mode}"
        unstructured: list[str] = []
        async with connect(url, key, mode) as (client, seen):
            await client.list_tools()
            before = await rest.count()
            for tool, args, mentions in cases:
                name = f"{era}: {tool} {args}"
                try:
                    r = await client.call_tool(tool, args)
                except Exception as exc:  # a protocol (JSON-RPC) error would land here
                    c.check(f"{name}: a tool error, not a protocol error", False, repr(exc))
                    continue
                text = " ".join(getattr(b, "text", "") for b in r.content)
                c.check(f"{name}: a tool error (isError) naming the problem",
                        r.is_error and mentions in text, f"is_error={r.is_error} text={text!r}")
                sc = r.structured_content or {}
                if not (sc.get("success") is False and sc.get("code") == "invalid_request"):
                    unstructured.append(f"{tool}: structuredContent={r.structured_content!r} "
                                        f"text={text!r}")
            c.check(f"{era}: refused arguments carry the structured failure "
                    "{success: false, code: invalid_request}", not unstructured,
                    "; ".join(unstructured))
            c.equal(f"{era}: nothing was created", await rest.count(), before)
            # The protocol session (legacy) is still usable after the refusals.
            if mode == "legacy":
                ok_result(c, f"{era}: session_info still works",
                          await client.call_tool("session_info", {}))
        if mode == "legacy":
            # Leaving the client sent HTTP DELETE: that ends the session.
            status, row = await rest.session(seen.get("id", "-"))
            c.check(f"{era}: closing the client (HTTP DELETE) ended its session",
                    status == 200 and row.get("status") == "disconnected"
                    and row.get("disconnect_reason") == "client_closed", (status, row))


class TerminationWarnings(logging.Handler):
    """Collects the SDK's warnings about HTTP DELETE answers it does not expect."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Session termination failed" in message:
            self.seen.append(message)


async def run(args: argparse.Namespace) -> Checks:
    c = Checks()
    terminations = TerminationWarnings()
    logging.getLogger("mcp.client.streamable_http").addHandler(terminations)
    rest = Rest(args.rest, args.key)
    async with rest.http:
        for name, story in (("legacy", legacy_story), ("current", current_story),
                            ("bad-args", bad_args_story)):
            print(f"--- {name}")
            try:
                await story(c, args.url, args.key, rest)
            except Exception as exc:
                c.crashed(name, exc)
    # The session is ended all the same (checked above); only the status differs from what the
    # SDK expects (200 or 204). Judged only when the stories ran to their ends (DELETEs were sent).
    if not c.failed:
        c.check("HTTP DELETE of a protocol session answers a status the SDK accepts",
                not terminations.seen, "; ".join(sorted(set(terminations.seen))))
    return c


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the MCP endpoint, http://HOST:PORT/mcp")
    p.add_argument("--key", required=True, help="the API key (MCP_API_KEY)")
    p.add_argument("--rest", required=True, help="the REST base, http://HOST:PORT/api/mcp")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="sdk-log %(name)s %(levelname)s: %(message)s")
    try:
        c = asyncio.run(asyncio.wait_for(run(args), OVERALL_TIMEOUT_S))
    except (TimeoutError, asyncio.TimeoutError):
        print(f"FAIL  the whole run took more than {OVERALL_TIMEOUT_S} s")
        print("0 passed, 1 failed")
        return 1
    if c.failed:
        print("failed: " + "; ".join(c.failed))
    print(f"{c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
