"""One write per turn of the event loop: what a response's head and body become on the wire (a real socket)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from embedserve.server.http.coalescing import CoalescingTransport


class Recording:
    """The real transport, with the writes it was given listed."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[list[bytes]] = []

    def writelines(self, data: list[bytes]) -> None:
        self.writes.append(list(data))
        self.transport.writelines(data)

    def write(self, data: bytes) -> None:
        self.writes.append([data])
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def connected() -> tuple[CoalescingTransport, Recording, socket.socket]:
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    recording = Recording(transport)  # type: ignore[arg-type]
    return CoalescingTransport(recording, loop), recording, peer  # type: ignore[arg-type]


async def turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def received(peer: socket.socket) -> bytes:
    peer.settimeout(30)
    chunks = []
    while chunk := peer.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_head_and_body_written_in_one_turn_go_out_as_one_write() -> None:
    async def main() -> tuple[list[list[bytes]], bytes]:
        transport, recording, peer = await connected()
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        transport.write(b"body")
        assert recording.writes == []  # nothing sent within the turn
        await turn()
        transport.close()
        await turn()
        return recording.writes, received(peer)

    writes, data = asyncio.run(main())
    assert writes == [[b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n", b"body"]]
    assert data == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"


def test_writes_in_later_turns_go_out_in_their_own_turn_in_order() -> None:
    async def main() -> tuple[list[list[bytes]], bytes]:
        transport, recording, peer = await connected()
        for chunk in (b"one ", b"two ", b"three"):
            transport.write(chunk)
            await turn()
        transport.close()
        await turn()
        return recording.writes, received(peer)

    writes, data = asyncio.run(main())
    assert writes == [[b"one "], [b"two "], [b"three"]]  # a streamed answer is not held back
    assert data == b"one two three"


def test_close_sends_what_was_written_before_it() -> None:
    async def main() -> bytes:
        transport, _, peer = await connected()
        transport.write(b"an error, ")
        transport.write(b"then closed")
        transport.close()
        await turn()
        return received(peer)

    assert asyncio.run(main()) == b"an error, then closed"


def test_what_is_written_to_a_lost_connection_is_dropped_quietly() -> None:
    async def main() -> list[list[bytes]]:
        transport, recording, peer = await connected()
        recording.transport.close()  # the connection went away inside the same turn
        transport.write(b"too late")
        await turn()
        peer.close()
        assert transport.is_closing()
        return recording.writes

    assert asyncio.run(main()) == []
