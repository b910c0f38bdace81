# Tether's MCP endpoint from the official Python SDK (pip install mcp==2.3.0).
import asyncio
import os

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

URL = os.environ.get("TETHER_MCP_URL", "http://127.0.0.1:8181/mcp")
KEY = os.environ["MCP_API_KEY"]


async def main():
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        # terminate_on_close=False: leaving does not end the session, so the token can resume it.
        transport = streamable_http_client(URL, http_client=http, terminate_on_close=False)
        async with Client(transport, mode="legacy") as client:
            info = await client.call_tool("session_info")
            print("session:", info.structured_content)
            grant = await client.call_tool("get_reconnect_token")
            print("token:", grant.structured_content)


asyncio.run(main())
