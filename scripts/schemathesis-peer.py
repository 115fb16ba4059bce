"""Keeps one WebSocket client connected to the server under schemathesis, so the
API's connection routes have a live connection to act on (the stateful phase
follows the ids GET /api/connections lists) and `chat:lobby` has a member.

Usage: schemathesis-peer.py WS_URL JWT_SECRET. Reconnects whenever the server
closes the connection (schemathesis disconnects it); prints `connected <id>` on
the first welcome, so the caller can wait for it. Runs until killed.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time

import websockets


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret: str) -> str:
    """An HS256 token for user `schemathesis-peer`, valid for a day."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": "schemathesis-peer", "roles": ["peer"], "exp": int(time.time()) + 86400}
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


async def hold(url: str, secret: str) -> None:
    first = True
    while True:
        try:
            async with websockets.connect(f"{url}?token={token(secret)}") as ws:
                welcome = json.loads(await ws.recv())
                if first:
                    print("connected", welcome.get("connection_id"), flush=True)
                    first = False
                await ws.send(json.dumps({"action": "subscribe", "topic": "chat:lobby", "ref": "1"}))
                async for _ in ws:
                    pass
        except (OSError, websockets.WebSocketException):
            pass
        # The server is starting, or closed this connection: connect again.
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2]))
