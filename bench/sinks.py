"""Baseline servers: the bare stacks fleetwire is measured against.

Both accept mTLS WebSocket connections and answer every binary message with the same
small binary reply, doing nothing else:

- ``websockets``: the `websockets` library on the plain asyncio event loop;
- ``picows``: a `picows` listener on uvloop.

Run as ``python bench/sinks.py --mode websockets --port P --cert C --key K --ca CA``.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl

from system import pin, raise_nofile

# The size of an envelope ack for a 36-byte txid and topic `V`.
REPLY = bytes(range(92))


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """mTLS: TLS 1.2+, client certificate required and verified against `ca`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


async def websockets_sink(port: int, ctx: ssl.SSLContext) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            if isinstance(message, bytes):
                await ws.send(REPLY)

    async with serve(
        handler, "127.0.0.1", port, ssl=ctx, compression=None, ping_interval=None, max_size=2**20
    ):
        await asyncio.Future()


async def picows_sink(port: int, ctx: ssl.SSLContext) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

    class Sink(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type is WSMsgType.BINARY:
                transport.send(WSMsgType.BINARY, REPLY)
            elif frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    def factory(request: WSUpgradeRequest) -> WSListener:
        return Sink()

    server = await ws_create_server(factory, "127.0.0.1", port, ssl=ctx, max_frame_size=2**20)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("websockets", "picows"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True, help="PEM bundle of trusted client CAs")
    parser.add_argument("--cpu", type=int, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        pin(args.cpu)
    raise_nofile()
    ctx = server_context(args.cert, args.key, args.ca)
    if args.mode == "websockets":
        asyncio.run(websockets_sink(args.port, ctx))
    else:
        import uvloop

        uvloop.run(picows_sink(args.port, ctx))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
