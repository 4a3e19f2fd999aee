"""SMS through a Twilio-shaped HTTP API (aiohttp), or a local sink file without one.

``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded
``To``, ``From``, ``Body`` and ``StatusCallback``, HTTP basic auth (account SID,
auth token). ``201`` with the message's ``sid`` is accepted; ``429`` and ``5xx``
may pass later (``retry``); other ``4xx`` are final, and Twilio's errors about
the number itself (21211 invalid 'To', 21614 not a mobile number, 21610
unsubscribed) mark the address dead (``invalid_to``). The provider then reports
the message's fate to the status callback (api/code_routes.py).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import aiohttp

from paynode.actors.notify.sink import JsonLinesSink
from paynode.domain.notify.channels import ChannelName, Message, Outcome
from paynode.domain.settings import SmsSettings

SINK_FILE = "sms-sink.jsonl"
STATUS_CALLBACK_PATH = "/v1/callbacks/sms-status"  # api/code_routes.py
_READ_LIMIT = 16 * 1024  # bytes of the provider's answer read
MAX_BODY_CHARS = 1600  # Twilio's limit on Body
INVALID_NUMBER_CODES = frozenset({21211, 21214, 21217, 21407, 21421, 21610, 21612, 21614})


class SmsChannel:
    name: ChannelName = "sms"

    def __init__(self, settings: SmsSettings, data_dir: Path, callback_url: str) -> None:
        """``callback_url``: the public URL of the status callback route."""
        self._sms = settings
        self._callback = callback_url
        self._sink = None if settings.base_url else JsonLinesSink(data_dir / SINK_FILE)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            basic = base64.b64encode(f"{self._sms.account_sid}:{self._sms.auth_token}".encode())
            self._http = aiohttp.ClientSession(
                headers={"Authorization": "Basic " + basic.decode("ascii")},
                timeout=aiohttp.ClientTimeout(total=self._sms.timeout_ms / 1000),
                connector=aiohttp.TCPConnector(limit=16),
            )
        return self._http

    async def send(self, message: Message) -> Outcome:
        body = message.text[:MAX_BODY_CHARS]
        if self._sink is not None:
            sid = "SMsink" + message.id[-26:]
            await self._sink.write(
                {
                    "id": message.id,
                    "sid": sid,
                    "to": message.to,
                    "from": self._sms.from_number,
                    "body": body,
                    "at": time.time(),
                }
            )
            return Outcome(ok=True, provider_id=sid, detail="201 written to sink")
        url = (f"{self._sms.base_url.rstrip('/')}/2010-04-01/Accounts/"
               f"{self._sms.account_sid}/Messages.json")  # fmt: skip
        form = {"To": message.to, "From": self._sms.from_number, "Body": body,
                "StatusCallback": self._callback}  # fmt: skip
        try:
            async with self._session().post(url, data=form, allow_redirects=False) as resp:
                status = resp.status
                raw = await resp.content.read(_READ_LIMIT)
        except TimeoutError:
            return Outcome(ok=False, retry=True, detail="timeout")
        except aiohttp.ClientError as e:
            return Outcome(ok=False, retry=True, detail=type(e).__name__)  # never the message
        answer = _json(raw)
        if status in (200, 201):
            given = answer.get("sid")
            return Outcome(ok=True, provider_id=given if isinstance(given, str) else None,
                           detail=f"http_{status}")  # fmt: skip
        code = answer.get("code")
        detail = f"http_{status}" + (f" {code}" if isinstance(code, int) else "")
        if status == 429 or status >= 500:
            return Outcome(ok=False, retry=True, detail=detail)
        return Outcome(ok=False, invalid_to=code in INVALID_NUMBER_CODES, detail=detail)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def _json(raw: bytes) -> dict[str, object]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
