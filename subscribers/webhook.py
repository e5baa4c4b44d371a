"""webhook: POST each CloudEvent (structured mode) to a URL, optionally signed
with Standard Webhooks headers so the receiver can verify it came from us."""

from __future__ import annotations

from pydantic import field_validator

from hookbus.adapters.http import HttpClient
from hookbus.bus import signing
from hookbus.bus.delivery.subscriber import Subscriber, SubscriberConfig
from hookbus.bus.events.event import Event
from hookbus.bus.secrets import mark_secret


class WebhookConfig(SubscriberConfig):
    url: str
    headers: dict[str, str] = {}
    secret: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        mark_secret(value)  # a webhook URL often carries its token
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None:
            signing.secret_bytes(value)
            mark_secret(value)
        return value


class WebhookSubscriber(Subscriber):
    Config = WebhookConfig
    config: WebhookConfig
    silenceable = True

    async def start(self) -> None:
        self.http = HttpClient(timeout=self.config.timeout)

    async def handle(self, event: Event) -> None:
        body = event.json_with_seq()
        headers = {"Content-Type": "application/cloudevents+json", **self.config.headers}
        if self.config.secret:
            headers.update(signing.headers(self.config.secret, f"{event.source}#{event.id}", body))
        await self.http.request("POST", self.config.url, data=body, headers=headers)

    async def close(self) -> None:
        await self.http.close()


SUBSCRIBER = WebhookSubscriber
