"""A small SIP user agent over UDP for the tests: a caller placing calls through a proxy and
a callee answering them, each bounded in time (every wait has a timeout).

Enough of RFC 3261 for a proxy like Kamailio: INVITE with a digest answer to a 407
(RFC 2617 MD5, no qop), ACK, BYE, CANCEL, loose routes from Record-Route. Not a general
SIP stack: one socket per agent, no TCP, no retransmission timers (loopback loses nothing).
"""

from __future__ import annotations

import hashlib
import queue
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field

_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _token() -> str:
    return secrets.token_hex(6)


@dataclass
class Message:
    first: str
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def is_request(self) -> bool:
        return not self.first.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.first.split(" ", 1)[0] if self.is_request else self.cseq_method

    @property
    def status(self) -> int:
        return int(self.first.split(" ")[1]) if not self.is_request else 0

    @property
    def cseq_method(self) -> str:
        return self.get("CSeq").split()[-1]

    def get(self, name: str) -> str:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return ""

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID")

    def encode(self) -> bytes:
        lines = [self.first, *(f"{k}: {v}" for k, v in self.headers if k != "Content-Length")]
        lines.append(f"Content-Length: {len(self.body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + self.body).encode()


def parse(data: bytes) -> Message:
    text = data.decode("utf-8", "replace")
    head, _sep, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _colon, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return Message(lines[0], headers, body)


def _tag(header: str) -> str:
    match = re.search(r";tag=([^;>\s]+)", header)
    return match.group(1) if match else ""


def _uri(header: str) -> str:
    match = re.search(r"<([^>]+)>", header)
    return match.group(1) if match else header.split(";", maxsplit=1)[0]


class _Agent:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.inbox: queue.Queue[tuple[Message, tuple[str, int]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if data.strip():
                self.handle(parse(data), addr)

    def handle(self, msg: Message, addr: tuple[str, int]) -> None:
        self.inbox.put((msg, addr))

    def send(self, msg: Message, addr: tuple[str, int]) -> None:
        self.sock.sendto(msg.encode(), addr)

    def reply(
        self,
        request: Message,
        addr: tuple[str, int],
        status: int,
        reason: str,
        *,
        to_tag: str = "",
        extra: list[tuple[str, str]] | None = None,
        body: str = "",
    ) -> Message:
        to = request.get("To")
        if to_tag and ";tag=" not in to:
            to = f"{to};tag={to_tag}"
        headers = [("Via", via) for via in request.all("Via")]
        headers += [("Record-Route", rr) for rr in request.all("Record-Route")]
        headers += [
            ("From", request.get("From")),
            ("To", to),
            ("Call-ID", request.call_id),
            ("CSeq", request.get("CSeq")),
            *(extra or []),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        response = Message(f"SIP/2.0 {status} {reason}", headers, body)
        self.send(response, addr)
        return response

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@dataclass
class CalleeCall:
    call_id: str
    from_tag: str
    to_tag: str
    invited_at: float
    answered: bool = False
    bye_received: bool = False  # a BYE came to the callee (the caller's or the proxy's)


class Callee(_Agent):
    """Answers every INVITE as ``behaviour`` says: ``answer`` (180 then 200), ``busy``
    (486), ``ring`` (180, then waits for the CANCEL: 200 and 487). ``to_tag`` fixes the
    To-tag of its answers (a test of reused dialog identifiers); else a random one."""

    def __init__(self, behaviour: str = "answer", to_tag: str = "") -> None:
        self.behaviour = behaviour
        self.to_tag = to_tag
        self.calls: dict[str, CalleeCall] = {}
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, msg: Message, addr: tuple[str, int]) -> None:
        if not msg.is_request:
            return
        method = msg.method
        with self._lock:
            call = self.calls.get(msg.call_id)
            if method == "INVITE" and _tag(msg.get("To")) == "":
                if call is None or call.bye_received:
                    call = self.calls[msg.call_id] = CalleeCall(
                        msg.call_id, _tag(msg.get("From")), self.to_tag or _token(), time.time()
                    )
                self.reply(msg, addr, 100, "Trying")
                if self.behaviour == "busy":
                    self.reply(msg, addr, 486, "Busy Here", to_tag=call.to_tag)
                    return
                self.reply(msg, addr, 180, "Ringing", to_tag=call.to_tag)
                if self.behaviour == "answer":
                    contact = [("Contact", f"<sip:callee@127.0.0.1:{self.port}>")]
                    self.reply(msg, addr, 200, "OK", to_tag=call.to_tag, extra=contact, body=_SDP)
                    call.answered = True
                else:
                    self._ringing = (msg, addr)
            elif method == "CANCEL":
                self.reply(msg, addr, 200, "OK")
                ringing = getattr(self, "_ringing", None)
                if ringing is not None and call is not None:
                    self.reply(
                        ringing[0], ringing[1], 487, "Request Terminated", to_tag=call.to_tag
                    )
            elif method == "BYE":
                self.reply(msg, addr, 200, "OK")
                if call is not None:
                    call.bye_received = True
            # ACK: nothing to answer


@dataclass
class CallResult:
    status: int  # the final response to the INVITE (0: none)
    call_id: str
    from_tag: str
    to_tag: str = ""
    bye_from_network: bool = False  # the proxy ended the call (its dialog timeout)
    talked: float = 0.0  # seconds between the 200 and the end
    responses: list[int] = field(default_factory=list)


class Caller(_Agent):
    """Places calls through ``proxy``; answers a 407 with a digest of ``password``."""

    def __init__(
        self,
        proxy: tuple[str, int],
        user: str,
        domain: str = "sip.example.net",
        password: str = "not-checked",  # noqa: S107 - checked only for an account with one
    ) -> None:
        self.proxy = proxy
        self.user = user
        self.domain = domain
        self.password = password
        super().__init__()

    def _expect(self, call_id: str, deadline: float) -> Message | None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg, addr = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            if msg.call_id != call_id:
                continue
            if msg.is_request:  # the proxy's BYE (dialog timeout) or a re-sent request
                if msg.method == "BYE":
                    self.reply(msg, addr, 200, "OK")
                return msg
            return msg

    def _request(
        self,
        method: str,
        ruri: str,
        call_id: str,
        cseq: int,
        from_tag: str,
        to: str,
        *,
        branch: str = "",
        routes: list[str] | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: str = "",
    ) -> Message:
        headers = [
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{branch or _token()};rport"),
            ("Max-Forwards", "70"),
            *(("Route", route) for route in routes or []),
            ("From", f"<sip:{self.user}@{self.domain}>;tag={from_tag}"),
            ("To", to),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{self.user}@127.0.0.1:{self.port}>"),
            *(extra or []),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return Message(f"{method} {ruri} SIP/2.0", headers, body)

    def _digest(self, challenge: str, method: str, uri: str) -> str:
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
        realm, nonce = fields.get("realm", ""), fields.get("nonce", "")

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - SIP Digest

        response = md5(
            f"{md5(f'{self.user}:{realm}:{self.password}')}:{nonce}:{md5(f'{method}:{uri}')}"
        )
        return (
            f'Digest username="{self.user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5'
        )

    def call(
        self,
        called: str,
        callee_port: int,
        *,
        talk: float = 0.0,
        cancel_after_ringing: bool = False,
        wait_bye: float = 0.0,
        call_id: str = "",
        from_tag: str = "",
        timeout: float = 10.0,
    ) -> CallResult:
        """One call to ``called`` at the callee's port. Answered: talk ``talk`` seconds then
        BYE, or (``wait_bye``) wait up to that long for the network's BYE."""
        call_id = call_id or f"{_token()}@127.0.0.1"
        from_tag = from_tag or _token()
        ruri = f"sip:{called}@127.0.0.1:{callee_port}"
        to = f"<sip:{called}@{self.domain}>"
        result = CallResult(0, call_id, from_tag)
        cseq, extra = 1, list[tuple[str, str]]()
        deadline = time.monotonic() + timeout
        while True:
            branch = _token()
            invite = self._request(
                "INVITE", ruri, call_id, cseq, from_tag, to, branch=branch, extra=extra, body=_SDP
            )
            self.send(invite, self.proxy)
            final = None
            while final is None:
                msg = self._expect(call_id, deadline)
                if msg is None:
                    return result
                if msg.is_request or msg.cseq_method != "INVITE":
                    continue
                result.responses.append(msg.status)
                if msg.status == 180 and cancel_after_ringing:
                    cancel = self._request(
                        "CANCEL", ruri, call_id, cseq, from_tag, to, branch=branch
                    )
                    self.send(cancel, self.proxy)
                    cancel_after_ringing = False
                if msg.status >= 200:
                    final = msg
            result.status = final.status
            result.to_tag = _tag(final.get("To"))
            if final.status >= 300:  # ACK in the INVITE's transaction
                ack = self._request(
                    "ACK", ruri, call_id, cseq, from_tag, final.get("To"), branch=branch
                )
                self.send(ack, self.proxy)
            if final.status == 407 and not extra:
                challenge = final.get("Proxy-Authenticate")
                extra = [("Proxy-Authorization", self._digest(challenge, "INVITE", ruri))]
                cseq += 1
                continue
            break
        if final.status != 200:
            return result
        routes = list(reversed(final.all("Record-Route")))
        remote = _uri(final.get("Contact")) or ruri
        dialog_to = final.get("To")
        self.send(
            self._request("ACK", remote, call_id, cseq, from_tag, dialog_to, routes=routes),
            self.proxy,
        )
        answered = time.monotonic()
        if wait_bye:
            end = time.monotonic() + wait_bye
            while time.monotonic() < end:
                msg = self._expect(call_id, end)
                if msg is not None and msg.is_request and msg.method == "BYE":
                    result.bye_from_network = True
                    result.talked = time.monotonic() - answered
                    return result
            return result
        time.sleep(talk)
        result.talked = time.monotonic() - answered
        cseq += 1
        self.send(
            self._request("BYE", remote, call_id, cseq, from_tag, dialog_to, routes=routes),
            self.proxy,
        )
        while True:
            msg = self._expect(call_id, time.monotonic() + 5)
            if msg is None or (not msg.is_request and msg.cseq_method == "BYE"):
                return result

    def options(self, timeout: float = 1.0) -> int:
        """An OPTIONS to the proxy; its status (0: no answer): the proxy is up."""
        call_id = f"{_token()}@127.0.0.1"
        request = self._request(
            "OPTIONS",
            f"sip:{self.proxy[0]}:{self.proxy[1]}",
            call_id,
            1,
            _token(),
            f"<sip:{self.proxy[0]}>",
        )
        self.send(request, self.proxy)
        msg = self._expect(call_id, time.monotonic() + timeout)
        return msg.status if msg is not None and not msg.is_request else 0
