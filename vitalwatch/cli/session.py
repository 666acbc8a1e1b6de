"""``vitalwatch session BED STEP``: run a chair's session from the command line, as a station does.

Each step is the nurse station's command, sent over MQTT on ``.../BED/cmd`` (QoS 1, never
retained) with the nurse's name; the gateway's result on ``.../cmd/result`` is printed, with the
refusal's reason when it is refused (docs/mqtt.md, "Commands"). ``readiness`` only reads the
bed's retained readiness check and open prompts.

Exit codes: 0 the gateway carried it out (or ``readiness`` printed), 1 no broker or no answer
within ``--timeout``, 2 a bad option, 3 the gateway refused it (the reason on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import textwrap
import uuid
from typing import Any

import aiomqtt

from vitalwatch import strict_json
from vitalwatch.cli.broker_args import Broker, add_broker_arguments, broker_from_args
from vitalwatch.delivery.broker import message_bytes
from vitalwatch.delivery.commands import AGE_BANDS, DOSE_UNITS, EVENTS

__all__ = ["build_command", "register", "run"]

EXIT_OK = 0
EXIT_BROKER = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

STEPS = ("start", "infusion", "pause", "resume", "stop", "end", "event", "bp", "done", "readiness")

EXAMPLES = """\
examples (site clinic-a, chair-1; add --broker/--username/--password-file as for `vitalwatch tail`):
  vitalwatch session chair-1 start --site clinic-a --by "RN Kim" --age-band older_adult
  vitalwatch session chair-1 readiness --site clinic-a
  vitalwatch session chair-1 infusion --site clinic-a --by "RN Kim" --dose 0.5 --weight 72
  vitalwatch session chair-1 infusion --site clinic-a --by "RN Kim" --dose 0.5 --weight 72 \\
      --minutes 40 --override "second BP taken by hand"
  vitalwatch session chair-1 bp --site clinic-a --by "RN Kim"          # take a BP now
  vitalwatch session chair-1 done --site clinic-a chair-1-p3 --by "RN Kim"
  vitalwatch session chair-1 pause --site clinic-a --by "RN Kim"
  vitalwatch session chair-1 resume --site clinic-a --by "RN Kim"
  vitalwatch session chair-1 event --site clinic-a dissociation --score 2 --by "RN Kim"
  vitalwatch session chair-1 event --site clinic-a rescue_medication --drug ondansetron \\
      --dose-given 4 --unit mg --by "RN Kim"
  vitalwatch session chair-1 stop --site clinic-a --by "RN Kim"        # pump stopped: recovery
  vitalwatch session chair-1 end --site clinic-a --by "RN Kim"         # discharge

steps: start (ended -> baseline), infusion (baseline -> infusion, after the readiness check),
pause/resume (the infusion), stop (pump stopped: infusion -> recovery), end (discharge:
recovery -> ended), event, bp (take a BP now: the cuff, else a prompt), done (a prompt is done),
readiness (print the pre-infusion check and the open prompts).
exit codes: 0 done, 1 no broker or no answer, 2 bad option, 3 refused by the gateway.
"""


def register(sub: Any) -> None:
    """Add ``session`` to the ``vitalwatch`` command line."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "session",
        help="run a chair's session (start, infusion, pause, resume, stop, end, event) over MQTT",
        description="Send one step of a chair's session to its gateway, as the nurse station does, "
        "and print the gateway's answer.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bed", help="bed id (e.g. chair-1)")
    parser.add_argument("step", choices=STEPS, help="what to do")
    parser.add_argument("what", nargs="?", help="event: the event kind; done: the prompt id")
    parser.add_argument("--site", required=True, help="site id (e.g. clinic-a)")
    parser.add_argument("--prefix", default="vitalwatch/v1", help="topic prefix (default vitalwatch/v1)")
    parser.add_argument("--by", help="the nurse's name, initials or role (required for every step that acts)")
    parser.add_argument("--age-band", choices=AGE_BANDS, help="start: the age band (never a date of birth)")
    parser.add_argument("--dose", type=float, help="infusion: ketamine dose in mg/kg")
    parser.add_argument("--weight", type=float, help="infusion: weight in kg")
    parser.add_argument("--minutes", type=float, help="infusion: planned minutes (default 40)")
    parser.add_argument("--override", help="infusion: why it starts with readiness items open")
    parser.add_argument("--score", type=int, help="event: 0 none, 1 mild, 2 moderate, 3 severe")
    parser.add_argument("--drug", help="event rescue_medication: the drug")
    parser.add_argument("--dose-given", type=float, help="event rescue_medication: the amount")
    parser.add_argument("--unit", choices=DOSE_UNITS, help="event rescue_medication: unit of the amount")
    parser.add_argument("--note", help="event note: a free note without identifiers")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (10)")
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON")
    add_broker_arguments(parser)
    parser.set_defaults(func=run)


def _level(name: str, value: str) -> str:
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"{name} must be one topic level (no '/', '+', '#'), got {value!r}")
    return value


def build_command(args: argparse.Namespace, request_id: str) -> dict[str, Any] | None:
    """The command document for ``args.step`` (None for ``readiness``); ValueError for a bad option.

    Only the options given are sent: the gateway checks values itself and its refusal says why.
    """
    step = args.step
    if step == "readiness":
        return None
    if step != "bp" and not args.by:
        raise ValueError(f"{step} needs --by (the nurse's name)")
    cmd: dict[str, Any] = {"request_id": request_id}
    if args.by:
        cmd["by"] = args.by
    if step == "start":
        cmd["command"] = "start_session"
        if args.age_band:
            cmd["age_band"] = args.age_band
    elif step == "infusion":
        if args.dose is None or args.weight is None:
            raise ValueError("infusion needs --dose (mg/kg) and --weight (kg)")
        cmd |= {"command": "start_infusion", "dose_mg_per_kg": args.dose, "weight_kg": args.weight}
        if args.minutes is not None:
            cmd["planned_minutes"] = args.minutes
        if args.override:
            cmd["override_reason"] = args.override
    elif step in ("pause", "resume"):
        cmd |= {"command": "phase", "phase": step}
    elif step == "stop":
        cmd["command"] = "pump_stopped"
    elif step == "end":
        cmd["command"] = "end_session"
    elif step == "bp":
        cmd["command"] = "nibp"
    elif step == "done":
        if not args.what:
            raise ValueError("done needs the prompt id (from `vitalwatch session BED readiness` or tail)")
        cmd |= {"command": "prompt_done", "prompt_id": args.what}
    elif step == "event":
        if args.what not in EVENTS:
            raise ValueError(f"event needs one of {', '.join(EVENTS)}")
        cmd |= {"command": "event", "event": args.what}
        for field, value in (
            ("score", args.score),
            ("drug", args.drug),
            ("dose", args.dose_given),
            ("dose_unit", args.unit),
            ("note", args.note),
        ):
            if value is not None:
                cmd[field] = value
    return cmd


def _client(broker: Broker) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        tls_context=broker.tls,
        timeout=10,
    )


def _describe(result: dict[str, Any]) -> str:
    detail = result.get("detail") or {}
    if result.get("ok"):
        parts = [f"{k} {v}" for k, v in sorted(detail.items()) if not isinstance(v, list | dict)]
        lines = [
            f"ok: {result.get('command')} on {result.get('bed')}"
            + (f" ({', '.join(parts)})" if parts else "")
        ]
        for item in detail.get("open_items") or []:
            lines.append(f"  started with open item: {item}")
        return "\n".join(lines)
    error = result.get("error") or {}
    return f"refused ({error.get('code')}): {error.get('message')}"


async def _send(broker: Broker, base: str, cmd: dict[str, Any], wait_s: float) -> dict[str, Any] | None:
    """Publish ``cmd`` and wait for its result (matched on request_id); None after ``wait_s``."""
    async with _client(broker) as client:
        await client.subscribe(f"{base}/cmd/result", qos=1)
        body = strict_json.dumps(cmd, what="command", separators=(",", ":"))
        await client.publish(f"{base}/cmd", body, qos=1, retain=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for msg in client.messages:
                    with contextlib.suppress(ValueError):
                        doc = json.loads(message_bytes(msg))
                        if isinstance(doc, dict) and doc.get("request_id") == cmd["request_id"]:
                            return doc
    return None


async def _readiness(broker: Broker, base: str, wait_s: float) -> dict[str, dict[str, Any]]:
    """The retained readiness and prompts documents of the bed (what arrives within ``wait_s``)."""
    found: dict[str, dict[str, Any]] = {}
    async with _client(broker) as client:
        for name in ("readiness", "prompts"):
            await client.subscribe(f"{base}/{name}", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for msg in client.messages:
                    with contextlib.suppress(ValueError):
                        doc = json.loads(message_bytes(msg))
                        if isinstance(doc, dict):
                            found[str(msg.topic).rsplit("/", 1)[1]] = doc
                    if len(found) == 2:
                        break
    return found


def _print_readiness(docs: dict[str, dict[str, Any]]) -> None:
    ready = docs.get("readiness")
    if ready is None:
        print("no readiness published for this bed (is its gateway running?)")
    else:
        verdict = "READY" if ready.get("ready") else "NOT READY"
        print(f"{ready.get('bed')} ({ready.get('phase')}): {verdict} to start the infusion")
        for item in ready.get("items") or []:
            print(f"  [{'x' if item.get('ok') else ' '}] {item.get('text')}")
    for prompt in (docs.get("prompts") or {}).get("prompts") or []:
        print(f"  PROMPT {prompt.get('prompt_id')}: {prompt.get('text')}")
        print(textwrap.indent(f"if it stays open: {prompt.get('then')}", "    "))


def run(args: argparse.Namespace) -> int:
    """Entry point of ``vitalwatch session``."""
    try:
        base = f"{args.prefix}/{_level('--site', args.site)}/{_level('BED', args.bed)}"
        broker = broker_from_args(args)
        cmd = build_command(args, f"cli-{uuid.uuid4().hex[:16]}")
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"vitalwatch session: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if cmd is None:
            docs = asyncio.run(_readiness(broker, base, min(args.timeout, 2.0)))
            if args.json:
                print(strict_json.dumps(docs, what="cli", sort_keys=True))
            else:
                _print_readiness(docs)
            return EXIT_OK
        result = asyncio.run(_send(broker, base, cmd, args.timeout))
    except aiomqtt.MqttError as exc:
        print(f"vitalwatch session: broker {broker.host}:{broker.port}: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except KeyboardInterrupt:
        return EXIT_BROKER
    if result is None:
        print(
            f"vitalwatch session: no answer from {args.bed}'s gateway within {args.timeout:g} s "
            "(is it running and connected to this broker?)",
            file=sys.stderr,
        )
        return EXIT_BROKER
    if args.json:
        print(strict_json.dumps(result, what="cli", sort_keys=True))
    if not result.get("ok"):
        print(_describe(result), file=sys.stderr)
        return EXIT_REFUSED
    if not args.json:
        print(_describe(result))
    return EXIT_OK
