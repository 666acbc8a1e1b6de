"""Hypothesis stateful test of the lifecycle invariants under random inputs.

Invariants checked after every step:
- seq over all transitions of the bed is 1, 2, 3, ... (strictly +1, never reused);
- a latched (HIGH physiological) occurrence is never cleared without an acknowledgement first,
  except by ending the session (a nurse action);
- no physiological alarm is ever computed from an invalid value: invalid samples are drawn from
  60-69 % / 20-29 /min (values that would trip every limit at once) and no alert may carry them;
- an alert_id keeps its condition, and a cleared occurrence never comes back.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vitalwatch.drivers.events import DeviceStatus, Observation
from vitalwatch.engine.outputs import AlertState, AlertTransition, Category, Output, Priority
from vitalwatch.engine.session import BedEngine
from vitalwatch.engine.table import load_alarm_table

TABLE = load_alarm_table(None)
INVALID_SPO2 = range(60, 70)
INVALID_PULSE = range(20, 30)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = BedEngine(TABLE, bed="b", devices={"ox": "spo2", "bp": "nibp"})
        self.now = 0.0
        self.transitions: list[AlertTransition] = []
        self.acked: set[str] = set()
        self.cleared: set[str] = set()
        self.condition_of: dict[str, str] = {}
        self.sensor_off = False
        self.ended_ids: set[str] = set()
        self.problems: list[str] = []

    def _take(self, outs: list[Output]) -> None:
        for out in outs:
            if not isinstance(out, AlertTransition):
                continue
            self.transitions.append(out)
            aid = out.alert_id
            if self.condition_of.setdefault(aid, out.condition) != out.condition:
                self.problems.append(f"{aid} changed condition")
            if aid in self.cleared:
                self.problems.append(f"{aid} transition after cleared")
            if out.state is AlertState.ACKNOWLEDGED:
                self.acked.add(aid)
            if out.state is AlertState.CLEARED:
                latched = out.priority is Priority.HIGH and out.category is Category.PHYSIOLOGICAL
                if latched and aid not in self.acked and out.phase != "ended":
                    # Allowed only if the condition was still present... a latched HIGH must not clear.
                    self.problems.append(f"latched {aid} cleared without ack")
                self.cleared.add(aid)
            if out.category is Category.PHYSIOLOGICAL and out.value is not None:
                bad = INVALID_SPO2 if out.parameter == "spo2" else INVALID_PULSE
                if out.parameter in ("spo2", "pulse_rate") and int(out.value) in bad:
                    self.problems.append(f"{aid} from invalid value {out.value}")

    @rule(dt=st.floats(0.2, 20.0), spo2=st.integers(80, 100), pulse=st.integers(35, 150))
    def valid_sample(self, dt: float, spo2: int, pulse: int) -> None:
        self.now += dt
        if self.sensor_off:
            return
        self._take(self.engine.observe("ox", Observation("spo2", float(spo2), "%"), self.now))
        self._take(self.engine.observe("ox", Observation("pulse_rate", float(pulse), "/min"), self.now))

    @rule(dt=st.floats(0.2, 20.0), spo2=st.sampled_from(INVALID_SPO2), pulse=st.sampled_from(INVALID_PULSE))
    def invalid_sample(self, dt: float, spo2: int, pulse: int) -> None:
        """A sample under an unreliable status, or with no value at all."""
        self.now += dt
        if not self.sensor_off:
            self.sensor_off = True
            self._take(self.engine.observe("ox", DeviceStatus("artifact", True), self.now))
        self._take(self.engine.observe("ox", Observation("spo2", float(spo2), "%"), self.now))
        self._take(self.engine.observe("ox", Observation("pulse_rate", float(pulse), "/min"), self.now))
        self._take(self.engine.observe("ox", Observation("spo2", None, "%"), self.now))

    @rule(dt=st.floats(0.2, 5.0))
    def status_off(self, dt: float) -> None:
        self.now += dt
        if self.sensor_off:
            self.sensor_off = False
            self._take(self.engine.observe("ox", DeviceStatus("artifact", False), self.now))

    @rule(dt=st.floats(0.2, 200.0), sys=st.integers(60, 230), dia=st.integers(30, 130))
    def nibp(self, dt: float, sys: int, dia: int) -> None:
        self.now += dt
        for kind, value in (
            ("nibp_systolic", sys),
            ("nibp_diastolic", dia),
            ("nibp_mean", (sys + 2 * dia) // 3),
        ):
            self._take(self.engine.observe("bp", Observation(kind, float(value), "mm[Hg]"), self.now))

    @rule(dt=st.floats(0.0, 120.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        self.engine.bytes_seen("bp", self.now)
        self._take(self.engine.tick(self.now))

    @rule(dt=st.floats(0.0, 5.0), which=st.sampled_from(["*", "first", "bogus"]))
    def ack(self, dt: float, which: str) -> None:
        self.now += dt
        active = self.engine.active_alarms()
        target = which if which != "first" else (active[0].alert_id if active else "bogus")
        self._take(self.engine.acknowledge(target, "nurse", self.now))

    @rule(dt=st.floats(0.0, 5.0), phase=st.sampled_from(["baseline", "infusion", "recovery"]))
    def phase(self, dt: float, phase: str) -> None:
        self.now += dt
        self._take(self.engine.set_phase(phase, self.now))

    @invariant()
    def seq_is_contiguous(self) -> None:
        assert list(range(1, len(self.transitions) + 1)) == [t.seq for t in self.transitions]

    @invariant()
    def no_problem(self) -> None:
        assert [] == self.problems

    @invariant()
    def active_alarms_are_not_cleared(self) -> None:
        for alarm in self.engine.active_alarms():
            assert alarm.alert_id not in self.cleared
            assert alarm.state is not AlertState.CLEARED


EngineMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestEngineInvariants = EngineMachine.TestCase
