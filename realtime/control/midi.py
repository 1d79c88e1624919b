"""MIDI learn: a controller's knobs and faders (control change messages) drive live parameters.

Learn mode binds the next moved control to a parameter (key M in the window, or OSC
`/dream/midi/learn s PARAM`); each control's 0-127 is scaled into its parameter's range as the
knob table declares it, and written through LiveParams like an OSC message, never into the
loop. Soft takeover: a control changes its parameter only once it reaches the value the
parameter has (after start, a preset, OSC or a key moved it), so a knob never jumps the
picture. The bindings of each device are kept in one JSON file, read at start (a malformed file
is refused then) and rewritten (atomically) on every learn.

The port is opened with mido's python-rtmidi backend (the optional extra `midi`); mido calls
`MidiLearn.handle` on its own thread.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from realtime.control.atomic import write_atomically
from realtime.control.params import KNOBS, LiveParams, ParamError
from realtime.knobs import Knob

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'dream-installation[midi]' (or: pip install mido python-rtmidi)"
FILE_VERSION = 1
CC_MAX = 127  # a control change carries 7 bits
# The parameters a control can drive: the numbers with a range, the on/off switches, and the
# layer (a control sweeps the dreaming model's layers, shallow to deep). Target and model are
# not: a sweep through 1000 classes or a model load per step is no use on a knob.
LEARNABLE: tuple[str, ...] = (
    *(
        name
        for name, spec in KNOBS.items()
        if not spec.kind and (spec.type is bool or (spec.lo is not None and spec.hi is not None))
    ),
    "layer",
)
# rtmidi names a port "client:port NN:MM"; the numbers change when a controller is plugged in
# again, so bindings are kept under the name without them.
_PORT_NUMBERS = re.compile(r"\s+\d+:\d+$")


class MidiError(RuntimeError):
    """MIDI could not start (no mido, no such port, a malformed bindings file) or a learn
    request was refused; the message says what is valid."""


Control = tuple[int, int]  # (channel 0-15 as mido counts, controller number 0-127)


def device_key(port_name: str) -> str:
    """The name a device's bindings are kept under: the port name without rtmidi's numbers."""
    return _PORT_NUMBERS.sub("", port_name.strip())


def scale(spec: Knob, cc: int) -> float:
    """A control's value 0-127 as a value of the parameter: lo..hi linearly (0..1 for a switch)."""
    lo, hi = (0.0, 1.0) if spec.type is bool else (float(spec.lo), float(spec.hi))  # type: ignore[arg-type]
    return lo + (hi - lo) * cc / CC_MAX


def _tolerance(spec: Knob) -> float:
    """How near a control must come to a parameter's value to take it over: one step of the
    control, or half a step of an integer parameter (which a control step may jump over)."""
    step = (float(spec.hi) - float(spec.lo)) / CC_MAX  # type: ignore[arg-type]
    return max(step, 0.5) if spec.type is int else step


@dataclass
class _Binding:
    """One control's parameter and where the control and the parameter were last seen."""

    param: str
    caught: bool = False  # the control has reached the parameter's value: it drives it
    last: float | None = None  # the control's previous position, scaled
    sent: float | None = None  # the value this control last stored


class BindingsFile:
    """The JSON file of every device's bindings:
    `{"version": 1, "devices": {"nanoKONTROL2": [{"channel": 1, "control": 7, "param": "zoom"}]}}`
    (channels 1-16, as controllers label them)."""

    def __init__(self, path: str | Path) -> None:
        """Read the file (a missing one is empty).

        Raises:
            MidiError: the file cannot be read, is not JSON, or holds an entry that is not a
                channel 1-16, a controller 0-127 and a learnable parameter.
        """
        self.path = Path(path)
        self.devices: dict[str, dict[Control, str]] = {}
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as err:
            raise MidiError(f"cannot read MIDI bindings file {self.path}: {err}") from err
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested too deep
            raise MidiError(
                f"MIDI bindings file {self.path} is not valid JSON ({err}); fix it or delete it "
                f"to learn afresh"
            ) from err
        self.devices = _parse(data, self.path)

    def save(self) -> None:
        """Write every device's bindings atomically (a temporary file, then a rename).

        Raises:
            OSError: the folder cannot be written (the bindings stay in memory).
        """
        data = {
            "version": FILE_VERSION,
            "devices": {
                device: [
                    {"channel": ch + 1, "control": cc, "param": param}
                    for (ch, cc), param in sorted(bindings.items())
                ]
                for device, bindings in sorted(self.devices.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _parse(data: object, path: Path) -> dict[str, dict[Control, str]]:
    where = f"MIDI bindings file {path}"
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        raise MidiError(
            f'{where}: expected {{"version": {FILE_VERSION}, "devices": {{DEVICE: [...]}}}}; fix '
            f"it or delete it to learn afresh"
        )
    if data.get("version") != FILE_VERSION:
        raise MidiError(f"{where}: version {data.get('version')!r}; expected {FILE_VERSION}")
    devices: dict[str, dict[Control, str]] = {}
    for device, entries in data["devices"].items():
        if not isinstance(entries, list):
            raise MidiError(f"{where}: device {device!r}: expected a list of bindings")
        bindings: dict[Control, str] = {}
        for entry in entries:
            ok = isinstance(entry, dict) and set(entry) == {"channel", "control", "param"}
            ch, cc, param = (entry.get(k) if ok else None for k in ("channel", "control", "param"))
            if not (
                ok
                and type(ch) is int
                and 1 <= ch <= 16
                and type(cc) is int
                and 0 <= cc <= CC_MAX
                and param in LEARNABLE
            ):
                raise MidiError(
                    f"{where}: device {device!r}: bad binding {entry!r}; expected "
                    f'{{"channel": 1-16, "control": 0-127, "param": one of {", ".join(LEARNABLE)}}}'
                )
            bindings[(ch - 1, cc)] = param
        devices[str(device)] = bindings
    return devices


class MidiLearn:
    """One device's bindings, learn mode and soft takeover. Any thread may call any method: the
    MIDI callback thread (handle), the OSC thread and the window's main thread (learn)."""

    def __init__(self, params: LiveParams, device: str, store: BindingsFile) -> None:
        self._params = params
        self.device = device_key(device)
        self._store = store
        # Guards the bindings, the learn request and the counters.
        self._lock = threading.Lock()
        self._bindings = {
            control: _Binding(param)
            for control, param in store.devices.get(self.device, {}).items()
        }
        self._armed: str | None = None  # the parameter the next moved control is bound to
        self.applied = 0  # control changes written into the parameters
        self.held = 0  # control changes held back by soft takeover

    @property
    def armed(self) -> str | None:
        """The parameter learn mode waits to bind, or None."""
        with self._lock:
            return self._armed

    def bindings(self) -> dict[Control, str]:
        """(channel 0-15, controller) -> parameter."""
        with self._lock:
            return {control: b.param for control, b in self._bindings.items()}

    def learn(self, param: str | None) -> None:
        """Bind the next moved control to `param`; None, "", "none" or "off" cancels.

        Raises:
            MidiError: `param` is not a learnable parameter (the message lists them).
        """
        word = (param or "").strip().lower()
        if word in ("", "none", "off", "cancel"):
            with self._lock:
                self._armed = None
            logger.info("MIDI learn cancelled")
            return
        if word not in LEARNABLE:
            raise MidiError(
                f"cannot learn {param!r}; MIDI can drive: {', '.join(LEARNABLE)} (or 'none' to "
                f"cancel)"
            )
        with self._lock:
            self._armed = word
        logger.info("MIDI learn: move a control on %s to bind it to %s", self.device, word)

    def learn_next(self) -> str:
        """Arm learn for the parameter after the one armed (the first if none): key M."""
        with self._lock:
            i = LEARNABLE.index(self._armed) + 1 if self._armed else 0
        self.learn(LEARNABLE[i % len(LEARNABLE)])
        return LEARNABLE[i % len(LEARNABLE)]

    def handle(self, message: object) -> None:
        """mido's callback: a control change is learnt, or drives its parameter; other
        messages are ignored. Never raises (it runs on mido's thread)."""
        if getattr(message, "type", None) != "control_change":
            return
        control: Control = (int(message.channel), int(message.control))  # type: ignore[attr-defined]
        cc = int(message.value)  # type: ignore[attr-defined]
        with self._lock:
            if self._armed is not None:
                self._bind(control, self._armed, cc)
                return
            binding = self._bindings.get(control)
            if binding is None:
                return
            try:
                self._drive(binding, cc)
            except ParamError as err:  # the knob table and LEARNABLE agree: a bug if it happens
                logger.error("MIDI %s -> %s refused: %s", control, binding.param, err)

    def _bind(self, control: Control, param: str, cc: int) -> None:
        """Bind `control` to `param` (dropping the param's old control); the lock is held."""
        for other in [c for c, b in self._bindings.items() if b.param == param]:
            del self._bindings[other]
        self._bindings[control] = _Binding(param, last=scale(self._spec(param), cc))
        self._armed = None
        self._store.devices[self.device] = {c: b.param for c, b in self._bindings.items()}
        logger.info(
            "MIDI learn: %s channel %d control %d -> %s",
            self.device,
            control[0] + 1,
            control[1],
            param,
        )
        try:
            self._store.save()
        except OSError as err:
            logger.error(
                "MIDI bindings not saved to %s (%s); kept until exit", self._store.path, err
            )

    def _spec(self, param: str) -> Knob:
        """What a control's 0-127 is scaled into: the knob table's range, or for the layer the
        indices of the dreaming model's layers (their count changes with the model)."""
        if param == "layer":
            return Knob(0, 0, max(len(self._params.layers) - 1, 1))
        return KNOBS[param]

    def _value(self, param: str) -> float:
        """The parameter's value now, as a number on its control's scale."""
        value = self._params.get(param)
        if param == "layer":
            return float(self._params.layers.index(str(value)))
        return float(value)  # type: ignore[arg-type]

    def _drive(self, binding: _Binding, cc: int) -> None:
        """Soft takeover, then the write; the lock is held."""
        spec = self._spec(binding.param)
        value = scale(spec, cc)
        if spec.type is int:
            value = float(round(value))  # a layer index, a step count: whole numbers
        if spec.type is not bool:  # a switch just switches
            current = self._value(binding.param)
            tol = _tolerance(spec)
            if binding.caught and binding.sent is not None and abs(current - binding.sent) > 1e-9:
                binding.caught = False  # moved since by OSC, a key or a preset: take over again
            if not binding.caught:
                start = value if binding.last is None else binding.last
                binding.caught = min(start, value) - tol <= current <= max(start, value) + tol
            binding.last = value
            if not binding.caught:
                self.held += 1
                return
        self._params.set(binding.param, value)
        binding.sent = self._value(binding.param)
        self.applied += 1


def input_names() -> list[str]:
    """The MIDI inputs mido's rtmidi backend sees.

    Raises:
        MidiError: mido or python-rtmidi is not installed (with how to install them), or the
            system's MIDI (ALSA on Linux) cannot be opened.
    """
    mido = _mido()  # outside the try: its MidiError says how to install
    try:
        return list(mido.get_input_names())
    except Exception as err:  # noqa: BLE001 - rtmidi raises its own SystemError without ALSA
        raise MidiError(
            f"cannot list MIDI inputs ({type(err).__name__}: {err}); is the system's MIDI (ALSA "
            f"on Linux: /dev/snd/seq) there and the controller plugged in?"
        ) from err


def pick_port(wanted: str, names: list[str]) -> str:
    """The input to open: "auto" takes the first; a name matches exactly, else as the one input
    whose name contains it (case forgiven).

    Raises:
        MidiError: no input matches, or several do; the message lists the inputs.
    """
    seen = ", ".join(repr(n) for n in names) or "none"
    if not names:
        raise MidiError(f"no MIDI input found; plug in a controller (inputs seen: {seen})")
    if wanted == "auto":
        return names[0]
    if wanted in names:
        return wanted
    hits = [n for n in names if wanted.lower() in n.lower()]
    if len(hits) != 1:
        what = "matches several" if hits else "matches no"
        raise MidiError(f"--midi {wanted!r} {what} MIDI input; inputs: {seen}")
    return hits[0]


def find_midi(port: str, bindings_path: str | Path) -> tuple[str, BindingsFile]:
    """Everything MIDI needs that can fail, checked at start before the model loads: the
    bindings file, mido and its backend, the system's MIDI and the port.

    Args:
        port: "auto" for the first input, or (part of) an input's name.
        bindings_path: the JSON file of bindings (see BindingsFile).

    Returns:
        (the input's name, the bindings).

    Raises:
        MidiError: a malformed bindings file, no mido, no system MIDI, or no such port.
    """
    store = BindingsFile(bindings_path)
    return pick_port(port, input_names()), store


def open_midi(
    params: LiveParams, name: str, store: BindingsFile
) -> tuple[MidiLearn, Callable[[], None]]:
    """Open the MIDI input `name` (from find_midi) and handle its messages on mido's thread.

    Returns:
        (the learner, a function that closes the port).

    Raises:
        MidiError: the port cannot be opened.
    """
    learner = MidiLearn(params, name, store)
    try:
        inport = _mido().open_input(name, callback=learner.handle)
    except Exception as err:  # noqa: BLE001 - rtmidi's errors are its own classes
        raise MidiError(f"cannot open MIDI input {name!r}: {type(err).__name__}: {err}") from err
    logger.info("MIDI input %s: %d binding(s) from %s", name, len(learner.bindings()), store.path)
    return learner, inport.close


def _mido():
    try:
        import mido
        import rtmidi  # noqa: F401 - the backend mido is told to use; missing it is the same fault
    except ImportError as err:
        raise MidiError(f"MIDI needs mido and python-rtmidi ({err}); {INSTALL_HINT}") from err
    mido.set_backend("mido.backends.rtmidi", load=True)
    return mido
