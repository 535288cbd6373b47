"""Thin Celery entry points of webhooks.

Fan-outs and deliveries run on the `webhooks` queue's thread pool (the Procfile's
`webhooks`), so a slow receiver never delays a job; the sweeps run on `housekeeping`.
"""

from celery import shared_task

from webhooks import delivery, fanout, sweep


@shared_task(ignore_result=True)
def webhooks_fan_out(owner_id: int) -> None:
    delivery.kick(fanout.webhooks_fan_out(owner_id=owner_id))


@shared_task(ignore_result=True)
def webhooks_deliver(endpoint_id: str) -> None:
    delivery.webhooks_deliver(endpoint_id=endpoint_id)


@shared_task(ignore_result=True)
def webhooks_send_due() -> None:
    sweep.webhooks_send_due()


@shared_task(ignore_result=True)
def webhooks_fan_out_missed() -> None:
    sweep.webhooks_fan_out_missed()
