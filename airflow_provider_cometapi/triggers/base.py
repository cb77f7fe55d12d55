"""What the provider's triggers share: the hook of one run, released when the trigger ends."""

from __future__ import annotations

from airflow.triggers.base import BaseTrigger

from airflow_provider_cometapi.hooks.cometapi import CometAPIHook


class CometAPITrigger(BaseTrigger):
    """A trigger whose run holds one ``CometAPIHook`` (its event loop's shared HTTP session)."""

    _hook: CometAPIHook | None = None

    async def cleanup(self) -> None:
        """Release the hook's HTTP session; never touches the remote predictions (a restart calls it too)."""
        hook, self._hook = self._hook, None
        if hook is not None:
            await hook.aclose()
