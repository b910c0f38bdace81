"""The README's promise, with the official Python SDK: a client keeps its MCP session across a restart
of tether. Prints `before <session id>`, waits for a line on stdin (the test restarts the server on
the same port meanwhile), calls again on the same client and prints `after <session id>`."""
import argparse
import asyncio
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, key: str) -> int:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        transport = streamable_http_client(url, http_client=http, terminate_on_close=False)
        async with Client(transport, mode="legacy") as client:
            before = (await client.call_tool("session_info")).structured_content
            print("before", before["session_id"], flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            after = await client.call_tool("session_info")
            if after.is_error:
                print("after-error", after.content, flush=True)
                return 1
            print("after", after.structured_content["session_id"], flush=True)
            grant = await client.call_tool("get_reconnect_token")
            print("token-ok" if not grant.is_error else "token-error", flush=True)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    a = p.parse_args()
    sys.exit(asyncio.run(asyncio.wait_for(main(a.url, a.key), 60)))
